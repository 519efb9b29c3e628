"""`changegate`: the command line client of the REST API.

Standalone on purpose: stdlib and `requests` only, no Django and no changegate
server module, so it runs on a laptop that has none of the server's dependencies
and cannot reach around the API (the four-eyes rule is enforced by the server;
the CLI only asks). A test imports it in a fresh interpreter and checks that.

Exit codes: 0 ok, 1 refused by the server (any HTTP error), 2 usage, 3 cannot
connect (`errors`). Adding a command = one `cmd_*` function (`commands`, or
`review` for the reviewer's) plus its subparser in `main.build_parser`; HTTP and
error mapping live in `client.Client`, configuration in `config`, printing in
`render`, the patch built from flags in `patch`.
"""
