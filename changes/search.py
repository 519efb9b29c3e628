"""Finding changes by what they touch (issue 15): the search box of the change list
(and the API's `q`) and the history of one record. Selectors: they only narrow a
queryset already limited to what the user may see (`changes_visible`), so a search
never reveals a change its user could not open, and they run no statement of their
own: the page's one read of its rows carries the conditions (constant statements
per page, whatever is stored).

What a change touches is read from what it stores, not from a copy: its `items`
(DNS: `name`, `type`, `records`; firewall: `table` with `chain` or `set`, `rule`,
`rules`, `elements`) and its `plan` (`steps`: `name`, `type`, `before`/`after`
`rdatas`). Item names may be absolute (`www.demo.test.`, what the services store) or
relative to the zone (`www`, older and generated rows), so a name is compared in both
forms, the zone taken from the plan or else from the target's config. The JSON is
walked in SQL (SQLite's json_each, PostgreSQL's jsonb_path_query): one template per
database below, the same rows from both."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.db.models import BooleanField, Expression, F, Q, QuerySet
from django.utils.text import smart_split, unescape_string_literal

from changes.errors import ValidationFailed
from changes.kinds import kind_of
from changes.models import ChangeRequest, Target

# Rows (n, t) naming every key a change touches: its items' and its plan steps' names
# and types. Firewall items name a chain or a set of a table ("inet filter input").
_NAMES = {
    "sqlite": """
        SELECT json_extract(i.value, '$.name') AS n, json_extract(i.value, '$.type') AS t
          FROM json_each({items}) AS i WHERE i.type = 'object'
        UNION ALL SELECT json_extract(i.value, '$.table') || ' ' || json_extract(i.value, '$.chain'), 'chain'
          FROM json_each({items}) AS i WHERE i.type = 'object'
        UNION ALL SELECT json_extract(i.value, '$.table') || ' ' || json_extract(i.value, '$.set'), 'set'
          FROM json_each({items}) AS i WHERE i.type = 'object'
        UNION ALL SELECT json_extract(s.value, '$.name'), json_extract(s.value, '$.type')
          FROM json_each({plan}, '$.steps') AS s WHERE s.type = 'object'""",
    "postgresql": """
        SELECT i ->> 'name' AS n, i ->> 'type' AS t FROM jsonb_path_query({items}, 'lax $[*]') AS i
        UNION ALL SELECT (i ->> 'table') || ' ' || (i ->> 'chain'), 'chain'
          FROM jsonb_path_query({items}, 'lax $[*]') AS i
        UNION ALL SELECT (i ->> 'table') || ' ' || (i ->> 'set'), 'set' FROM jsonb_path_query({items}, 'lax $[*]') AS i
        UNION ALL SELECT s ->> 'name', s ->> 'type' FROM jsonb_path_query({plan}, 'lax $.steps[*]') AS s""",
}
# Rows (v) of every value a change proposes or replaces: records, rules, set
# elements, and the plan's before and after data.
_VALUES = {
    "sqlite": """
        SELECT r.value AS v FROM json_each({items}) AS i, json_each(i.value, '$.records') AS r
        UNION ALL SELECT r.value FROM json_each({items}) AS i, json_each(i.value, '$.rules') AS r
        UNION ALL SELECT r.value FROM json_each({items}) AS i, json_each(i.value, '$.elements') AS r
        UNION ALL SELECT json_extract(i.value, '$.rule') FROM json_each({items}) AS i WHERE i.type = 'object'
        UNION ALL SELECT r.value FROM json_each({plan}, '$.steps') AS s, json_each(s.value, '$.before.rdatas') AS r
        UNION ALL SELECT r.value FROM json_each({plan}, '$.steps') AS s, json_each(s.value, '$.after.rdatas') AS r""",
    "postgresql": """
        SELECT v #>> '{}' AS v FROM jsonb_path_query({items}, 'lax $[*].records[*]') AS v
        UNION ALL SELECT v #>> '{}' FROM jsonb_path_query({items}, 'lax $[*].rules[*]') AS v
        UNION ALL SELECT v #>> '{}' FROM jsonb_path_query({items}, 'lax $[*].elements[*]') AS v
        UNION ALL SELECT v #>> '{}' FROM jsonb_path_query({items}, 'lax $[*].rule') AS v
        UNION ALL SELECT v #>> '{}' FROM jsonb_path_query({plan}, 'lax $.steps[*].before.rdatas[*]') AS v
        UNION ALL SELECT v #>> '{}' FROM jsonb_path_query({plan}, 'lax $.steps[*].after.rdatas[*]') AS v""",
}
# The change's zone, lower-case without its final dot ("demo.test"): the plan's, else
# the target's configured one (a draft whose plan failed). None for a firewall.
_ZONE = {
    "sqlite": "RTRIM(LOWER(COALESCE(json_extract({plan}, '$.zone'), "
              "(SELECT json_extract(z.config, '$.zone') FROM {targets} AS z WHERE z.id = {target}))), '.')",
    "postgresql": "RTRIM(LOWER(COALESCE({plan} ->> 'zone', "
                  "(SELECT z.config ->> 'zone' FROM {targets} AS z WHERE z.id = {target}))), '.')",
}
# SQLite's LIKE has no escape character unless told; PostgreSQL's is the backslash already.
_LIKE = "LIKE %s ESCAPE '\\'"
# The prefilter (`_Touches`). SQLite stores JSON as text: a LIKE on it (ASCII case
# ignored). PostgreSQL stores jsonb: a jsonpath on the binary form, five times faster
# than printing every row's jsonb as text for a LIKE (45 ms against 230 ms at 20,000
# changes). Anywhere in a string, case ignored (flag i), the needle taken literally (q).
_PG_NEEDLE = {
    "names": ('lax $[*].* ? (@ like_regex {lit} flag "iq")', 'lax $.steps[*].name ? (@ like_regex {lit} flag "iq")'),
    "values": ('lax $[*].*[*] ? (@ like_regex {lit} flag "iq")',
               'lax $.steps[*].*.rdatas[*] ? (@ like_regex {lit} flag "iq")'),
}
_ROWS = {"names": _NAMES, "values": _VALUES}


class _Touches(Expression):
    """EXISTS (one of the change's name rows, or value rows, meets `condition`): a
    filter condition on ChangeRequest, correlated through the row's own columns (so
    it stays right inside subqueries and relabelled joins). `condition` is SQL over
    the row's `n`/`t` (names) or `v` (values) and `{zone}`, with `%s` for `params`.

    `needle`, when given, is text every match holds in its stored JSON: a cheap test
    of the items and plan for it first (SQLite: LIKE on the text; PostgreSQL: a
    jsonpath), so that only the few rows holding it have their JSON walked (at 20,000
    changes a search took 0.5-0.6 s walking every row's JSON)."""

    conditional = True
    output_field = BooleanField()

    def __init__(self, kind: str, condition: str, params: list[Any], needle: str | None = None) -> None:
        super().__init__()
        self.kind, self.condition, self.params = kind, condition, list(params)
        self.rows = _ROWS[kind]
        # Only text JSON stores as itself: no quote, backslash or control character
        # (escaped), and ASCII (SQLite's JSON escapes the rest as \uXXXX).
        plain = needle and needle.isascii() and needle.isprintable() and not set(needle) & {'"', "\\"}
        self.needle = needle.lower() if plain else None
        self.columns = [F("items"), F("plan"), F("target_id")]

    def get_source_expressions(self) -> list[Any]:
        return self.columns

    def set_source_expressions(self, exprs: list[Any]) -> None:
        self.columns = list(exprs)

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        if connection.vendor not in self.rows:
            raise NotImplementedError(f"searching change contents is not implemented on {connection.vendor}")
        items, plan, target = (compiler.compile(column)[0] for column in self.columns)
        columns = {"{items}": items, "{plan}": plan, "{target}": target,
                   "{targets}": connection.ops.quote_name(Target._meta.db_table)}
        # Placeholders replaced one by one: the SQL holds JSON braces ('{}') of its own.
        zone = _fill(_ZONE[connection.vendor], columns)
        sql = (f"EXISTS (SELECT 1 FROM ({_fill(self.rows[connection.vendor], columns)}) AS touched "
               f"WHERE {self.condition.replace('{zone}', zone)})")
        if self.needle is None:
            return sql, self.params
        if connection.vendor == "postgresql":
            prefilter = f"(jsonb_path_exists({items}, %s::jsonpath) OR jsonb_path_exists({plan}, %s::jsonpath))"
            needles = [path.replace("{lit}", f'"{self.needle}"') for path in _PG_NEEDLE[self.kind]]
        else:
            prefilter = f"({items} {_LIKE} OR {plan} {_LIKE})"
            needles = [_like_contains(self.needle)] * 2
        return f"({prefilter} AND {sql})", needles + self.params


def _fill(template: str, columns: dict[str, str]) -> str:
    for placeholder, sql in columns.items():
        template = template.replace(placeholder, sql)
    return template


def _like_contains(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _names_q(term: str) -> _Touches:
    """A name as typed, matched against the names as stored: absolute or not, with or
    without the final dot, relative to the zone or qualified with it; a firewall
    chain or set also by its own name ("input" for "inet filter input")."""
    name = term.lower().rstrip(".")
    condition = (
        "(LOWER(n) IN (%s, %s)"
        " OR LOWER(n) = %s || {zone} || '.'"  # typed relative, stored absolute
        " OR LOWER(n) || '.' || {zone} = %s"  # typed absolute, stored relative
        f" OR LOWER(n) {_LIKE})"  # "family table object": the object's name
    )
    like_last_word = "%" + " " + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return _Touches("names", condition, [name, name + ".", name + ".", name, like_last_word], needle=_needle(name))


def _needle(name: str) -> str | None:
    """What any stored form of `name` holds: its first label ("pay" of pay.demo.test,
    stored "pay" or "pay.demo.test."), of its last word on a firewall ("input" of
    "inet filter input", stored as table "inet filter" and chain "input")."""
    words = name.split()
    if not words:
        return None
    return words[-1].split(".")[0] or None


def _values_q(term: str) -> _Touches:
    """A value anywhere in the proposed or replaced data, as a part of it: an address
    within a rule, a host name within an MX or CNAME."""
    value = term.lower().rstrip(".")
    return _Touches("values", f"LOWER(v) {_LIKE}", [_like_contains(value)], needle=value or None)


def _number(term: str) -> int | None:
    digits = term.removeprefix("#")
    # isascii: "²".isdigit() is True; past 63 bits no change has that number.
    if digits.isascii() and digits.isdigit() and int(digits) < 2**63:
        return int(digits)
    return None


def search_terms(text: str) -> list[str]:
    """The terms of a search, as the admin splits them: by spaces, "quoted phrases" kept whole."""
    terms = []
    for bit in smart_split(text or ""):
        if bit[:1] in ('"', "'") and bit[-1:] == bit[:1]:
            bit = unescape_string_literal(bit)
        if bit.strip():
            terms.append(bit.strip())
    return terms


def term_q(term: str) -> Q:
    """What one search term matches. `#42` is change 42 and nothing else; `42` is change
    42 or a title or reason that says 42 (not the values: every address holding "42"
    would drown the change asked for). Any other term: an author's username (exact or
    its beginning), the title or reason, a record name (not for an address), a value."""
    number = _number(term)
    if term.startswith("#") and number is not None:
        return Q(pk=number)
    text = Q(title__icontains=term) | Q(reason__icontains=term)
    if number is not None:
        return Q(pk=number) | text
    if _is_address(term):
        # An address is a value, never an owner name (as a name its first label, "192",
        # would send every row holding "192" through the JSON walk: 0.8 s at 20,000 changes).
        return Q(author__username__istartswith=term) | text | Q(_values_q(term))
    return Q(author__username__istartswith=term) | text | Q(_names_q(term)) | Q(_values_q(term))


def _is_address(term: str) -> bool:
    try:
        ipaddress.ip_network(term, strict=False)
    except ValueError:
        return False
    return True


def changes_search(*, within: QuerySet[ChangeRequest], text: str) -> QuerySet[ChangeRequest]:
    """The changes of `within` (already limited to the visible ones) that match every
    term of `text` (term_q). No term: `within` unchanged. Never duplicates a row (no
    join that multiplies: the contents are matched by EXISTS)."""
    terms = search_terms(text)
    for term in terms:
        within = within.filter(term_q(term))
    return within


# ---------------------------------------------------------------------------
# History by record


def record_forms(target: Target, name: Any, rdtype: Any) -> tuple[str, str, list[str]]:
    """The key the target's kind reads for (name, type), and every form a change may
    have stored its name in: (canonical name, canonical type, forms, lower-case).
    DNS: "www", "www.demo.test" and "www.demo.test." are one record of demo.test.
    Raises ValidationFailed naming `name` or `type`, in the kind's words."""
    zone = str(target.config.get("zone") or "").lower().rstrip(".")
    typed = str(name or "").strip()
    # A search box's reading, not the zone file's: "www.demo.test" on demo.test means
    # www.demo.test., not www.demo.test.demo.test. (as the search matches it too).
    if zone and not typed.endswith(".") and (typed.lower() == zone or typed.lower().endswith("." + zone)):
        typed += "."
    key, errors = kind_of(target).parse_key(target.config, typed, rdtype)
    if key is None:
        raise ValidationFailed([{"index": None, "field": field, "message": message} for field, message in errors])
    absolute = key.name.lower()
    forms = {absolute, absolute.rstrip(".")}
    if zone and absolute.rstrip(".").endswith("." + zone):
        forms.add(absolute.rstrip(".")[: -len(zone) - 1])
    elif zone and absolute.rstrip(".") == zone:
        forms.add("@")
    return key.name, key.rdtype, sorted(forms)


def changes_touching(*, within: QuerySet[ChangeRequest], target: Target, name: Any,
                     rdtype: Any) -> QuerySet[ChangeRequest]:
    """Every change of `within` on `target` whose items or plan touch the record
    (name, type) (a DNS RRset, a firewall chain or set), newest first. Raises
    ValidationFailed for a name or type the target's kind cannot read."""
    _, canonical_type, forms = record_forms(target, name, rdtype)
    condition = f"LOWER(n) IN ({', '.join(['%s'] * len(forms))}) AND LOWER(t) = %s"
    needle = _needle(min(forms, key=len))
    needle = needle if needle and all(needle in form for form in forms) else None  # "@" holds no label
    return (within.filter(target=target)
            .filter(_Touches("names", condition, [*forms, canonical_type.lower()], needle=needle))
            .order_by("-created_at", "-pk"))
