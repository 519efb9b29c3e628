"""Registering nftables targets through every surface (the command, the admin add
form, the API), each through `target_register`, against a real firewall host in a
network namespace (and its sshd for the SSH transport)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from changes.models import AuditEvent, Origin, Target
from tests.conftest import grant
from tests.factories import api_client

from .firewall_host import FirewallHost

pytestmark = pytest.mark.django_db


def add_nft(*args: str) -> str:
    out = StringIO()
    call_command("target_add_nft", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def netns_args(fw_host: FirewallHost, *tables: str) -> list[str]:
    tables = tables or ("inet changegate",)
    return ["--netns", fw_host.netns, *[a for t in tables for a in ("--table", t)],
            "--state-dir", str(fw_host.state_dir), "--revert-seconds", "0"]


# ---------------------------------------------------------------------------
# manage.py target_add_nft


def test_target_add_nft_registers_a_netns_host_and_prints_it(fw_host):
    out = add_nft("fw1", *netns_args(fw_host), "--bake-seconds", "5", "--required-approvals", "2")
    target = Target.objects.get(name="fw1")
    assert (target.kind, target.bake_seconds, target.required_approvals) == ("nft", 5, 2)
    assert target.config["netns"] == fw_host.netns and target.config["tables"] == ["inet changegate"]
    assert target.item_count == 2  # chain input, set partners_v4
    assert f"Registered target fw1 (id {target.pk})" in out and f"network namespace {fw_host.netns}" in out
    event = AuditEvent.objects.get(target=target, action="target_registered")
    assert event.origin == Origin.CLI and event.actor is None


def test_target_add_nft_refuses_a_missing_table_clearly_and_stores_nothing(fw_host):
    with pytest.raises(CommandError) as info:
        add_nft("fw1", *netns_args(fw_host, "inet changegate", "inet absent"))
    assert "table(s) inet absent do not exist" in str(info.value)
    assert not Target.objects.exists()
    assert "inet absent" not in fw_host.nft("list", "tables")


def test_target_add_nft_create_tables_creates_the_missing_table_empty(fw_host):
    add_nft("fw1", *netns_args(fw_host, "inet changegate", "inet extra"), "--create-tables")
    assert Target.objects.get(name="fw1").config["tables"] == ["inet changegate", "inet extra"]
    assert "table inet extra" in fw_host.nft("list", "tables")
    assert fw_host.nft("list", "table", "inet", "extra").split() == ["table", "inet", "extra", "{", "}"]


def test_target_add_nft_refuses_an_unknown_namespace(fw_host):
    with pytest.raises(CommandError) as info:
        add_nft("fw1", "--netns", "cg-no-such-ns", "--table", "inet changegate", "--state-dir", str(fw_host.state_dir))
    assert "target fw1 not registered" in str(info.value)
    assert not Target.objects.exists()


@pytest.mark.parametrize(("args", "field"), [
    (["--netns", "bad/ns", "--table", "inet changegate"], "netns (--netns)"),
    (["--netns", "x", "--table", "changegate"], "tables (--table)"),
    (["--netns", "x"], "tables (--table)"),
    (["--netns", "x", "--table", "inet changegate", "--revert-seconds", "99999"], "revert_seconds (--revert-seconds)"),
    (["--netns", "x", "--table", "inet changegate", "--state-dir", "relative"], "state_dir (--state-dir)"),
    (["--netns", "x", "--table", "inet changegate", "--bake-seconds", "-1"], "bake_seconds (--bake-seconds)"),
    (["--ssh", "10.0.0.1", "--table", "inet changegate"], "ssh_user (--ssh-user)"),
    (["--ssh", "10.0.0.1", "--ssh-user", "root", "--known-hosts", "/tmp/kh", "--table", "inet changegate",
      "--ssh-key-file", "/etc/ssh/ssh_host_ed25519_key"], "ssh_key_file (--ssh-key-file)"),
    (["--ssh", "10.0.0.1:port", "--table", "inet changegate"], "ssh_port"),
    (["--netns", "x", "--ssh-user", "root", "--table", "inet changegate"], "--ssh-user only with --ssh"),
])
def test_target_add_nft_bad_arguments_name_the_field(args, field):
    with pytest.raises(CommandError) as info:
        add_nft("fw1", *args)
    assert field in str(info.value)
    assert not Target.objects.exists()


def test_target_add_nft_needs_exactly_one_transport():
    with pytest.raises(CommandError, match="one of the arguments --ssh --netns is required"):
        add_nft("fw1", "--table", "inet changegate")


def test_target_add_nft_registers_an_ssh_host_storing_only_the_key_path(ssh_host):
    config = ssh_host.config()
    out = add_nft("fw-ssh", "--ssh", f"{config['ssh_host']}:{config['ssh_port']}", "--ssh-user", "root",
                  "--ssh-key-file", config["ssh_key_file"], "--known-hosts", config["known_hosts_file"],
                  "--table", "inet changegate", "--state-dir", config["state_dir"], "--revert-seconds", "0")
    target = Target.objects.get(name="fw-ssh")
    assert (target.config["transport"], target.config["ssh_port"]) == ("ssh", config["ssh_port"])
    assert target.config["ssh_key_file"] == config["ssh_key_file"]
    assert target.item_count == 2
    for secret in ssh_host.secrets:
        body = secret.split("-----")[2].strip().splitlines()[0]
        assert body not in out and body not in str(target.config)
        assert not AuditEvent.objects.filter(payload__icontains=body).exists()


# ---------------------------------------------------------------------------
# The admin add form


def admin_post(client, user, data):
    client.force_login(user)
    return client.post(reverse("admin:changes_target_add"), data)


def admin_base(config: dict, **extra) -> dict:
    import json

    return {"kind": "nft", "name": "fw1", "config_json": json.dumps(config), "required_approvals": "1",
            "approval_lifetime_seconds": "3600", "bake_seconds": "5", "bake_max_seconds": "3600",
            **extra}


def test_operator_registers_an_nft_target_in_the_admin(client, operator, fw_host):
    client.force_login(operator)
    form = client.get(reverse("admin:changes_target_add")).content.decode()
    assert 'name="kind"' in form and 'value="nft"' in form and 'name="config_json"' in form
    assert 'name="ssh_key_file"' in form and 'name="prepare"' in form
    response = admin_post(client, operator, admin_base(fw_host.config()))
    target = Target.objects.get(name="fw1")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:changes_target_change", args=[target.pk])
    assert (target.kind, target.config["netns"], target.item_count) == ("nft", fw_host.netns, 2)
    assert AuditEvent.objects.get(target=target, action="target_registered").origin == Origin.ADMIN
    page = client.get(reverse("admin:changes_target_change", args=[target.pk])).content.decode()
    assert fw_host.netns in page and "inet changegate" in page


def test_admin_create_tables_creates_the_missing_table(client, operator, fw_host):
    config = fw_host.config(tables=["inet changegate", "inet extra"])
    refused = admin_post(client, operator, admin_base(config))
    assert "table(s) inet extra do not exist" in refused.context["form"].non_field_errors()[0]
    assert not Target.objects.exists()
    assert admin_post(client, operator, admin_base(config, prepare="on")).status_code == 302
    assert "table inet extra" in fw_host.nft("list", "tables")


def test_admin_bad_nft_config_shows_errors_on_the_fields(client, operator, fw_host):
    bad = admin_post(client, operator, admin_base({"transport": "netns", "netns": "bad/ns", "tables": []}))
    assert bad.status_code == 200
    errors = bad.context["form"].errors
    assert any(e.startswith("netns: ") for e in errors["config_json"])
    assert any(e.startswith("tables: ") for e in errors["config_json"])
    policy = admin_post(client, operator, admin_base(fw_host.config(), bake_seconds="-1"))
    assert policy.context["form"].errors["bake_seconds"] == ["must be an integer 0..86400"]
    assert admin_post(client, operator, admin_base({}, config_json="{nope")).context["form"].errors[
        "config_json"][0].startswith("not JSON")
    assert admin_post(client, operator, admin_base({}, config_json="[]")).context["form"].errors[
        "config_json"] == ["must be a JSON object"]
    assert not Target.objects.exists()


def test_admin_ssh_key_file_has_its_own_field_and_is_never_shown_back(client, operator, ssh_host):
    config = ssh_host.config()
    key_file = config.pop("ssh_key_file")
    in_json = admin_post(client, operator, admin_base({**config, "ssh_key_file": key_file}))
    assert any("ssh_key_file: give it in its own field" in e for e in in_json.context["form"].errors["config_json"])
    outside = admin_post(client, operator, admin_base(config, ssh_key_file="/etc/ssh/ssh_host_ed25519_key"))
    assert any("key directory" in e for e in outside.context["form"].errors["ssh_key_file"])
    assert "/etc/ssh/ssh_host_ed25519_key" not in outside.content.decode()
    assert not Target.objects.exists()

    assert admin_post(client, operator, admin_base(config, ssh_key_file=key_file)).status_code == 302
    target = Target.objects.get(name="fw1")
    assert target.config["ssh_key_file"] == key_file and target.item_count == 2
    page = client.get(reverse("admin:changes_target_change", args=[target.pk])).content.decode()
    assert key_file not in page and "(set, not shown)" in page
    for secret in ssh_host.secrets:
        assert secret.split("-----")[2].strip().splitlines()[0] not in page


def test_a_non_operator_cannot_register_an_nft_target_in_the_admin(client, make_user, fw_host):
    plain = make_user("plainstaff", is_staff=True)
    assert admin_post(client, plain, admin_base(fw_host.config())).status_code == 403
    assert not Target.objects.exists()


# ---------------------------------------------------------------------------
# POST /api/v1/targets/


def api_body(config: dict, **extra) -> dict:
    return {"kind": "nft", "name": "fw1", "config": config, "bake_seconds": 5, **extra}


def test_operator_registers_an_nft_target_through_the_api(operator, author, fw_host):
    response = api_client(operator).post("/api/v1/targets/", api_body(fw_host.config()), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["kind"], body["name"], body["rrset_count"], body["bake_seconds"]) == ("nft", "fw1", 2, 5)
    assert body["config"]["netns"] == fw_host.netns and body["config"]["tables"] == ["inet changegate"]
    assert not {"zone", "primary", "nameservers", "tsig_key_file"} & set(body)
    target = Target.objects.get(pk=body["id"])
    assert AuditEvent.objects.get(target=target, action="target_registered").origin == Origin.API
    grant(author, "engineer", target)
    assert api_client(author).get(f"/api/v1/targets/{target.name}/").json()["config"]["netns"] == fw_host.netns


def test_api_prepare_creates_missing_tables_else_refuses(operator, fw_host):
    config = fw_host.config(tables=["inet changegate", "inet extra"])
    refused = api_client(operator).post("/api/v1/targets/", api_body(config), format="json")
    assert refused.status_code in (502, 503), refused.json()
    assert "inet extra do not exist" in refused.json()["detail"]
    assert not Target.objects.exists()
    created = api_client(operator).post("/api/v1/targets/", api_body(config, prepare=True), format="json")
    assert created.status_code == 201, created.json()
    assert "table inet extra" in fw_host.nft("list", "tables")
    assert api_client(operator).post("/api/v1/targets/", api_body(config, name="fw2", prepare="yes"),
                                     format="json").status_code == 400


def test_api_bad_nft_config_is_a_400_naming_the_config_fields(operator, fw_host):
    config = {**fw_host.config(), "netns": "bad/ns", "tables": ["changegate"], "revert_seconds": -1, "colour": "red"}
    response = api_client(operator).post("/api/v1/targets/", api_body(config), format="json")
    assert response.status_code == 400
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"config.netns", "config.tables", "config.revert_seconds", "config.colour"}
    assert not Target.objects.exists()


def test_non_operators_get_403_and_nothing_is_stored(author, make_user, fw_host):
    plain = make_user("plainstaff", is_staff=True)
    for user in (author, plain):
        response = api_client(user).post("/api/v1/targets/", api_body(fw_host.config()), format="json")
        assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    assert api_client().post("/api/v1/targets/", api_body(fw_host.config()), format="json").status_code in (401, 403)
    assert not Target.objects.exists()


def test_no_key_material_in_api_answers_and_the_key_path_only_to_operators(operator, author, ssh_host):
    config = ssh_host.config()
    created = api_client(operator).post("/api/v1/targets/", api_body(config), format="json")
    assert created.status_code == 201, created.json()
    target = Target.objects.get(name="fw1")
    grant(author, "engineer", target)
    grant(operator, "auditor", target)  # the operator role alone shows no target detail (as for DNS)
    as_operator = api_client(operator).get(f"/api/v1/targets/{target.pk}/")
    as_author = api_client(author).get(f"/api/v1/targets/{target.pk}/")
    listing = api_client(author).get("/api/v1/targets/")
    assert as_operator.json()["config"]["ssh_key_file"] == config["ssh_key_file"]
    assert "ssh_key_file" not in as_author.json()["config"]
    assert config["ssh_key_file"] not in as_author.content.decode() + listing.content.decode()
    for secret in ssh_host.secrets:
        body = secret.split("-----")[2].strip().splitlines()[0]
        for response in (created, as_operator, as_author, listing):
            assert body not in response.content.decode()


# ---------------------------------------------------------------------------
# The demo (make run): demo_setup registers fw.demo through the service


def test_demo_setup_registers_the_firewall_demo_target_and_grants_roles(fw_host, settings):
    from django.contrib.auth import get_user_model

    from approvals.policy import has_target_permission

    settings.DEBUG = True
    args = ["--fw-netns", fw_host.netns, "--fw-state-dir", str(fw_host.state_dir), "--fw-check", "10.77.0.1:8080"]
    call_command("demo_setup", *args, stdout=StringIO())
    call_command("demo_setup", *args, stdout=StringIO())  # idempotent: registered once
    target = Target.objects.get(name="fw.demo")
    assert Target.objects.count() == 1
    assert (target.kind, target.config["netns"], target.item_count) == ("nft", fw_host.netns, 2)
    assert target.health_checks == [{"type": "tcp", "host": "10.77.0.1", "port": 8080, "timeout": 1}]
    users = {u.username: u for u in get_user_model().objects.all()}
    assert has_target_permission(users["alice"], "submit_change", target)
    assert has_target_permission(users["bob"], "approve_change", target)
    assert not has_target_permission(users["alice"], "approve_change", target)
    assert has_target_permission(users["dave"], "export_audit", target)
