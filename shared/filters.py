"""Filter policies (SPEC §3): SNS-style matching over message attributes.

A policy maps attribute names to a list of accepted values; all keys must match
(AND), any entry of a key's list may match (OR), attributes the policy does not
mention are ignored. `{"$or": [policy, ...]}` ORs whole sub-policies.

List entries:

    "x" / 5 / true                       exact string / numeric (5 == 5.0) / boolean
    {"prefix": "a"}  {"suffix": "z"}     string starts / ends with
    {"equals-ignore-case": "Goal"}       string equal under Unicode case folding
    {"numeric": [">", 0, "<=", 150]}     one comparison (= < <= > >=) or a lower+upper range
    {"anything-but": ["a", 5]}           present and not listed (also a single value,
    {"anything-but": {"prefix": "x"}}    or {"prefix": ...} / {"suffix": ...}: strings only)
    {"exists": true|false}               key present (non-null, non-empty) / absent
    {"cidr": "10.0.0.0/8"}               string attribute is an IP inside the network

Types never cross: numeric operators and numbers never match strings, string
operators never match numbers, and a bool is neither. An array attribute matches
when any element matches, except `anything-but`, which needs every element unlisted.

Deviations from SNS, on purpose: a scalar value is accepted as a one-element list
(SPEC §3 uses `{"gameId": "12345"}`); `null` is rejected since attributes are never
null; numbers compare at full float precision with no ±1e9 bound; `exists: false`
also matches a message with no attributes at all; the 5-key limit applies to each
`$or`-expanded branch rather than to the top-level object.
"""

from __future__ import annotations

import ipaddress
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NoReturn

from shared.errors import InvalidFilter

MAX_KEYS: Final = 5
MAX_COMBINATIONS: Final = 150
MAX_OR_DEPTH: Final = 3
MAX_POLICY_BYTES: Final = 256 * 1024

_Check = Callable[[Mapping[str, Any]], bool]
_Pred = Callable[[Any], bool]
_Number = int | float

_LOWER: Final[dict[str, Callable[[Any, Any], bool]]] = {">": operator.gt, ">=": operator.ge}
_UPPER: Final[dict[str, Callable[[Any, Any], bool]]] = {"<": operator.lt, "<=": operator.le}
_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {"=": operator.eq, **_LOWER, **_UPPER}

# An IP literal (with an IPv6 zone) is never longer than this; longer strings skip parsing.
_MAX_IP_TEXT: Final = 64


class FilterPolicy:
    """A compiled filter policy. Build it with `compile_filter`."""

    __slots__ = ("_check", "canonical", "cost", "match_all")

    def __init__(self, check: _Check | None, canonical: str, cost: int = 0) -> None:
        self._check = check
        #: Sorted-key compact JSON of the normalized policy; "" for match-all.
        self.canonical: str = canonical
        self.match_all: bool = check is None
        #: What one match may cost: the policy's value combinations (0 for match-all).
        self.cost: int = cost

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        """Whether a message with these attributes passes the policy."""
        check = self._check
        return True if check is None else check(attributes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FilterPolicy) and other.canonical == self.canonical

    def __hash__(self) -> int:
        return hash(self.canonical)

    def __repr__(self) -> str:
        return f"FilterPolicy({self.canonical or '<match all>'})"


MATCH_ALL: Final = FilterPolicy(None, "")


def compile_filter(policy: object) -> FilterPolicy:
    """Validate `policy` and compile it; `None` or `{}` match everything.

    Raises `InvalidFilter` naming the offending path for any malformed policy.
    """
    if policy is None:
        return MATCH_ALL
    if not isinstance(policy, Mapping):
        raise InvalidFilter(
            f"filter must be a JSON object, not {_type_name(policy)}",
            details={"path": ""},
        )
    if not policy:
        return MATCH_ALL
    check, canon, combos, _ = _compile_policy(policy, "", 0)
    # ensure_ascii keeps the key safe for any store; then len() is also the byte size.
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"))
    if len(text) > MAX_POLICY_BYTES:
        _fail("", f"filter is larger than {MAX_POLICY_BYTES} bytes")
    return FilterPolicy(check, text, combos)


# --------------------------------------------------------------------------- parsing


def _fail(where: str, message: str) -> NoReturn:
    text = f"invalid filter at {where!r}: {message}" if where else f"invalid filter: {message}"
    raise InvalidFilter(text, details={"path": where})


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _number(value: object, where: str, what: str) -> _Number:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(where, f"{what} must be a number, not {_type_name(value)}")
    if isinstance(value, float):
        if not math.isfinite(value):
            _fail(where, f"{what} must be a finite number")
        # 5.0 and 5 are the same filter; one spelling keeps the canonical key stable.
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
    return value


def _string(value: object, where: str, op: str) -> str:
    if not isinstance(value, str):
        _fail(where, f"{op} expects a string, not {_type_name(value)}")
    return value


def _compile_policy(
    policy: object, prefix: str, depth: int
) -> tuple[_Check, dict[str, Any], int, list[frozenset[str]]]:
    """Compile one (sub-)policy.

    Returns the check, its canonical object, its value-combination count and the
    attribute-name set of every `$or`-expanded branch (for the key limit).
    """
    if not isinstance(policy, Mapping):
        _fail(prefix.rstrip("."), f"a policy must be an object, not {_type_name(policy)}")
    if not policy:
        _fail(prefix.rstrip("."), "an $or branch must be a non-empty object")
    n_keys = len(policy) - ("$or" in policy)
    if n_keys > MAX_KEYS:
        # Fail before compiling anything; the per-branch count below is the full rule.
        _fail(prefix.rstrip("."), f"at most {MAX_KEYS} attribute keys, got {n_keys}")
    fast: list[tuple[str, _Check]] = []
    slow: list[tuple[str, _Check]] = []
    canon: dict[str, Any] = {}
    names: set[str] = set()
    combos = 1
    for name, raw in policy.items():
        if not isinstance(name, str) or not name:
            _fail(prefix.rstrip("."), f"attribute names must be non-empty strings, got {name!r}")
        if name == "$or":
            continue
        where = prefix + name
        if name.startswith("$"):
            _fail(where, f"unknown operator {name!r} (only '$or' is supported)")
        if isinstance(raw, Mapping):
            _fail(where, "nested policies are not supported; give a list of values")
        entries: Sequence[object] = raw if isinstance(raw, (list, tuple)) else (raw,)
        if not entries:
            _fail(where, "the value list must not be empty")
        combos *= len(entries)
        if combos > MAX_COMBINATIONS:
            _fail(where, f"filter is too complex: more than {MAX_COMBINATIONS} combinations")
        key = _Key(name, where)
        for entry in entries:
            key.add(entry)
        check, is_fast = key.build()
        (fast if is_fast else slow).append((name, check))
        canon[name] = key.canonical()
        names.add(name)

    # Cheap set lookups first so most non-matching messages exit early.
    checks = [c for _, c in sorted(fast, key=lambda t: t[0])]
    checks += [c for _, c in sorted(slow, key=lambda t: t[0])]
    keysets = [frozenset(names)]

    if "$or" in policy:
        where = prefix + "$or"
        if depth >= MAX_OR_DEPTH:
            _fail(where, f"$or is nested too deeply (at most {MAX_OR_DEPTH} levels)")
        branches = policy["$or"]
        if not isinstance(branches, (list, tuple)):
            _fail(where, f"$or expects an array of policies, not {_type_name(branches)}")
        if not branches:
            _fail(where, "$or must list at least one policy")
        total = 0
        branch_checks: list[_Check] = []
        branch_canons: dict[str, dict[str, Any]] = {}
        keysets = []
        for i, branch in enumerate(branches):
            b_check, b_canon, b_combos, b_keysets = _compile_policy(
                branch, f"{where}[{i}].", depth + 1
            )
            # SNS counts an $or as the sum of its branches' combinations.
            total += b_combos
            if combos * total > MAX_COMBINATIONS:
                _fail(where, f"filter is too complex: more than {MAX_COMBINATIONS} combinations")
            branch_checks.append(b_check)
            branch_canons.setdefault(_dumps(b_canon), b_canon)
            keysets.extend(ks | names for ks in b_keysets)
        combos *= total
        checks.append(_any(branch_checks))
        canon["$or"] = [branch_canons[t] for t in sorted(branch_canons)]

    for ks in keysets:
        if len(ks) > MAX_KEYS:
            _fail(
                prefix.rstrip("."),
                f"at most {MAX_KEYS} attribute keys may apply to a message, got {len(ks)}"
                f" ({', '.join(sorted(ks))})",
            )
    return _all(checks), canon, combos, keysets


class _Key:
    """Collects the entries of one attribute's value list, then builds its check."""

    def __init__(self, name: str, where: str) -> None:
        self.name = name
        self.where = where
        self.strs: set[str] = set()
        self.nums: set[_Number] = set()
        self.bools: set[bool] = set()
        self.preds: list[_Pred] = []
        self.excludes: list[_Pred] = []
        self.exists_true = False
        self.exists_false = False
        self.canon: dict[str, object] = {}

    def _canon(self, obj: object) -> None:
        self.canon.setdefault(_dumps(obj), obj)

    def canonical(self) -> list[object]:
        return [self.canon[t] for t in sorted(self.canon)]

    def add(self, entry: object) -> None:
        if isinstance(entry, str):
            self.strs.add(entry)
            self._canon(entry)
        elif isinstance(entry, bool):
            self.bools.add(entry)
            self._canon(entry)
        elif isinstance(entry, (int, float)):
            n = _number(entry, self.where, "value")
            self.nums.add(n)
            self._canon(n)
        elif entry is None:
            _fail(self.where, "null is not supported (attribute values are never null)")
        elif isinstance(entry, Mapping):
            self._add_operator(entry)
        elif isinstance(entry, (list, tuple)):
            _fail(self.where, "nested arrays are not allowed in a value list")
        else:
            _fail(self.where, f"unsupported value {_type_name(entry)}")

    def _add_operator(self, entry: Mapping[Any, Any]) -> None:
        where = self.where
        if len(entry) != 1:
            _fail(where, f"an operator object must have exactly one key, got {list(entry)!r}")
        ((op, arg),) = entry.items()
        if op == "prefix":
            s = _string(arg, where, op)
            self.preds.append(_prefix(s))
            self._canon({op: s})
        elif op == "suffix":
            s = _string(arg, where, op)
            self.preds.append(_suffix(s))
            self._canon({op: s})
        elif op == "equals-ignore-case":
            folded = _string(arg, where, op).casefold()
            self.preds.append(_ignore_case(folded))
            self._canon({op: folded})
        elif op == "numeric":
            pred, canon = _parse_numeric(arg, where)
            self.preds.append(pred)
            self._canon({op: canon})
        elif op == "anything-but":
            pred, canon_arg = _parse_anything_but(arg, where)
            self.excludes.append(pred)
            self._canon({op: canon_arg})
        elif op == "exists":
            if not isinstance(arg, bool):
                _fail(where, f"exists expects true or false, not {_type_name(arg)}")
            if arg:
                self.exists_true = True
            else:
                self.exists_false = True
            self._canon({op: arg})
        elif op == "cidr":
            net = _parse_cidr(arg, where)
            self.preds.append(_in_network(net))
            self._canon({op: str(net)})
        else:
            _fail(where, f"unknown operator {op!r}")

    def build(self) -> tuple[_Check, bool]:
        """The attribute check, and whether it is a pure string-set lookup.

        The common shapes (only exact strings; one operator or only exact values,
        with no `anything-but`/`exists`) get specialised closures, since this runs
        once per message per subscription group.
        """
        key = self.name
        strs = frozenset(self.strs)
        nums = frozenset(self.nums)
        bools = frozenset(self.bools)
        preds = tuple(self.preds)
        excludes = tuple(self.excludes)
        exists_true = self.exists_true
        absent_ok = self.exists_false

        if not (nums or bools or preds or excludes or exists_true or absent_ok):

            def check_strings(attrs: Mapping[str, Any]) -> bool:
                v = attrs.get(key)
                if isinstance(v, str):
                    return v in strs
                if isinstance(v, list):
                    for e in v:
                        if isinstance(e, str) and e in strs:
                            return True
                return False

            return check_strings, True

        hit = _either(_exact(strs, nums, bools), _first_true(preds))
        if not (excludes or exists_true or absent_ok):

            def check_values(attrs: Mapping[str, Any]) -> bool:
                v = attrs.get(key)
                if v is None:
                    return False
                if isinstance(v, list):
                    return any(hit(e) for e in v)
                return hit(v)

            return check_values, False

        exclude = _first_true(excludes)

        def check(attrs: Mapping[str, Any]) -> bool:
            v = attrs.get(key)
            # SNS: `exists` needs a non-null, non-empty value; treat null and [] as absent.
            if v is None:
                return absent_ok
            if isinstance(v, list):
                if not v:
                    return absent_ok
                if exists_true or any(hit(e) for e in v):
                    return True
                # anything-but on an array: no element may be listed (current SNS docs).
                return any(all(x(e) for e in v) for x in excludes)
            return exists_true or hit(v) or exclude(v)

        return check, False


def _parse_numeric(arg: object, where: str) -> tuple[_Pred, list[object]]:
    if not isinstance(arg, (list, tuple)) or len(arg) not in (2, 4):
        _fail(
            where,
            'numeric expects [op, number] or [">"|">=", number, "<"|"<=", number],'
            f" got {_dumps_safe(arg)}",
        )
    op1 = arg[0]
    if not isinstance(op1, str) or op1 not in _COMPARE:
        _fail(where, f"unknown numeric operator {op1!r} (use =, <, <=, >, >=)")
    lo = _number(arg[1], where, f"the operand of {op1!r}")
    if len(arg) == 2:
        return _compare(_COMPARE[op1], lo), [op1, lo]
    if op1 not in _LOWER:
        _fail(where, f"a numeric range must start with '>' or '>=', not {op1!r}")
    op2 = arg[2]
    if not isinstance(op2, str) or op2 not in _UPPER:
        _fail(where, f"the upper bound of a numeric range must use '<' or '<=', not {op2!r}")
    hi = _number(arg[3], where, f"the operand of {op2!r}")
    if not lo < hi:
        _fail(where, f"numeric range bottom ({lo}) must be less than top ({hi})")
    return _between(_LOWER[op1], lo, _UPPER[op2], hi), [op1, lo, op2, hi]


def _parse_anything_but(arg: object, where: str) -> tuple[_Pred, object]:
    if isinstance(arg, Mapping):
        if len(arg) != 1:
            _fail(where, "anything-but takes exactly one of {'prefix': ...} or {'suffix': ...}")
        ((op, val),) = arg.items()
        if op == "prefix":
            s = _string(val, where, "anything-but prefix")
            return _not(_prefix(s)), {op: s}
        if op == "suffix":
            s = _string(val, where, "anything-but suffix")
            return _not(_suffix(s)), {op: s}
        _fail(where, f"anything-but supports only 'prefix' and 'suffix' objects, not {op!r}")
    values: Sequence[object] = arg if isinstance(arg, (list, tuple)) else (arg,)
    if not values:
        _fail(where, "anything-but list must not be empty")
    strs: set[str] = set()
    nums: set[_Number] = set()
    for v in values:
        if isinstance(v, str):
            strs.add(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            nums.add(_number(v, where, "anything-but value"))
        else:
            _fail(where, f"anything-but values must be strings or numbers, not {_type_name(v)}")
    canon: list[object] = [*sorted(nums), *sorted(strs)]
    return _not_listed(frozenset(strs), frozenset(nums)), canon


def _parse_cidr(arg: object, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = _string(arg, where, "cidr")
    if "/" not in text:
        _fail(where, f"cidr needs a network such as '10.0.0.0/24', got {text!r}")
    try:
        # strict=False: '10.0.0.7/24' means the /24 around it, as most tools read it.
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        _fail(where, f"malformed cidr {text!r}: {exc}")


def _dumps_safe(value: object) -> str:
    try:
        return _dumps(value)
    except (TypeError, ValueError):
        return repr(value)


# ------------------------------------------------------------------ predicate factories
# Each predicate takes one scalar attribute value and checks its type itself, so a
# string operator never matches a number and vice versa.


def _prefix(s: str) -> _Pred:
    def pred(e: Any) -> bool:
        return isinstance(e, str) and e.startswith(s)

    return pred


def _suffix(s: str) -> _Pred:
    def pred(e: Any) -> bool:
        return isinstance(e, str) and e.endswith(s)

    return pred


def _not(inner: _Pred) -> _Pred:
    """Negation for string-only anything-but forms: a non-string never matches."""

    def pred(e: Any) -> bool:
        return isinstance(e, str) and not inner(e)

    return pred


def _ignore_case(folded: str) -> _Pred:
    def pred(e: Any) -> bool:
        return isinstance(e, str) and e.casefold() == folded

    return pred


def _is_number(e: Any) -> bool:
    return isinstance(e, (int, float)) and not isinstance(e, bool)


def _compare(op: Callable[[Any, Any], bool], bound: _Number) -> _Pred:
    def pred(e: Any) -> bool:
        return _is_number(e) and op(e, bound)

    return pred


def _between(
    lo_op: Callable[[Any, Any], bool], lo: _Number, hi_op: Callable[[Any, Any], bool], hi: _Number
) -> _Pred:
    def pred(e: Any) -> bool:
        return _is_number(e) and lo_op(e, lo) and hi_op(e, hi)

    return pred


def _not_listed(strs: frozenset[str], nums: frozenset[_Number]) -> _Pred:
    def pred(e: Any) -> bool:
        if isinstance(e, str):
            return e not in strs
        if isinstance(e, bool):
            return True  # booleans can't be listed, so they are never excluded
        if isinstance(e, (int, float)):
            return e not in nums
        return False

    return pred


def _in_network(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> _Pred:
    def pred(e: Any) -> bool:
        if not isinstance(e, str) or len(e) > _MAX_IP_TEXT:
            return False
        try:
            addr = ipaddress.ip_address(e)
        except ValueError:
            return False
        # Membership is False across IP versions, so no explicit version check.
        return addr in net

    return pred


def _never(e: Any) -> bool:
    return False


def _exact(strs: frozenset[str], nums: frozenset[_Number], bools: frozenset[bool]) -> _Pred:
    """Set lookups for the exact values; the type decides which set may hold it."""
    if not (nums or bools):
        if not strs:
            return _never

        def exact_str(e: Any) -> bool:
            return isinstance(e, str) and e in strs

        return exact_str

    def exact(e: Any) -> bool:
        # bool before int: True == 1 and hash(True) == hash(1), but types never cross.
        if isinstance(e, str):
            return e in strs
        if isinstance(e, bool):
            return e in bools
        return isinstance(e, (int, float)) and e in nums

    return exact


def _either(a: _Pred, b: _Pred) -> _Pred:
    if a is _never:
        return b
    if b is _never:
        return a
    return lambda e: a(e) or b(e)


def _first_true(preds: Sequence[_Pred]) -> _Pred:
    """A predicate true when any of `preds` is; avoids a loop for the usual single one."""
    if not preds:
        return _never
    if len(preds) == 1:
        return preds[0]
    seq = tuple(preds)

    def pred(e: Any) -> bool:
        # A plain loop, not any(genexpr): this runs per message and skips a generator.
        for p in seq:  # noqa: SIM110
            if p(e):
                return True
        return False

    return pred


def _all(checks: Sequence[_Check]) -> _Check:
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        a, b = checks
        return lambda attrs: a(attrs) and b(attrs)
    seq = tuple(checks)

    def check(attrs: Mapping[str, Any]) -> bool:
        # A plain loop, not all(genexpr): this runs per message and skips a generator.
        for c in seq:  # noqa: SIM110
            if not c(attrs):
                return False
        return True

    return check


def _any(checks: Sequence[_Check]) -> _Check:
    if len(checks) == 1:
        return checks[0]
    seq = tuple(checks)

    def check(attrs: Mapping[str, Any]) -> bool:
        for c in seq:  # noqa: SIM110 - hot path, see _all
            if c(attrs):
                return True
        return False

    return check
