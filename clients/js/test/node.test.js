// Runs scenarios.js in Node against the control server of tests/clients/lab.py:
//   HERALD_CTL=http://127.0.0.1:PORT [HERALD_SCENARIO=name] node --experimental-websocket --test
// `make test` does this through tests/clients/test_js_client.py.
import { test } from "node:test";
import { HeraldClient } from "../herald.js";
import { makeCtx, scenarios } from "./scenarios.js";

const ctlUrl = process.env.HERALD_CTL;
if (!ctlUrl) throw new Error("HERALD_CTL is not set: run through pytest tests/clients/test_js_client.py");
const only = process.env.HERALD_SCENARIO;

for (const [name, run] of Object.entries(scenarios)) {
  if (only && only !== name) continue;
  test(name, { timeout: 60000 }, () => run(makeCtx(HeraldClient, ctlUrl)));
}
