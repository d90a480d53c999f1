"""Directory sign-on against a real OpenLDAP server (Debian's slapd, started by the test on
127.0.0.1 in a scratch folder), group mapping at each login, and trusted-header SSO that only
believes the configured proxy address.

Needs /usr/sbin/slapd (`make slapd`, which `make test` runs)."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
from serve_fixtures import (
    OPEN_QUESTION,
    PASSWORDS,
    RESTRICTED_DOC,
    RESTRICTED_QUESTION,
    demo_config,
    free_port,
    login,
    serving,
)

SLAPD = Path("/usr/sbin/slapd")
BASE = "dc=bank,dc=local"
ROOT_DN, ROOT_PW = f"cn=admin,{BASE}", "root-secret-1"
STAFF = {
    "kim": ("kim-ldap-pass", ["tellers"]),
    "park": ("park-ldap-pass", ["tellers", "compliance-officers"]),
    "choi": ("choi-ldap-pass", ["kofin-admins"]),
}
MAPPING = {
    "groups": {"tellers": ["branch"], "compliance-officers": ["branch", "compliance"]},
    "admin": ["kofin-admins"],
}


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    if not SLAPD.exists():
        pytest.fail(
            f"{SLAPD} is missing: run `make slapd` (installs Debian's slapd; `make test` does it first)", pytrace=False
        )
    root = tmp_path_factory.mktemp("slapd")
    (root / "data").mkdir()
    conf = root / "slapd.conf"
    conf.write_text(
        "\n".join(
            [
                *(f"include /etc/ldap/schema/{s}.schema" for s in ("core", "cosine", "inetorgperson", "nis")),
                "modulepath /usr/lib/ldap",
                "moduleload back_mdb",
                f"pidfile {root}/slapd.pid",
                "database mdb",
                f'suffix "{BASE}"',
                f'rootdn "{ROOT_DN}"',
                f"rootpw {ROOT_PW}",
                f"directory {root}/data",
                "maxsize 10485760",
                "access to attrs=userPassword by anonymous auth by self read by * none",
                "access to * by users read by anonymous auth",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    port = free_port()
    url = f"ldap://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(SLAPD), "-f", str(conf), "-h", url + "/", "-d", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _wait_for(url, proc)
    _load_directory(url)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _wait_for(url: str, proc) -> None:
    import ldap3

    for _ in range(100):
        if proc.poll() is not None:
            pytest.fail(f"slapd exited: {proc.stderr.read().decode(errors='replace')[-2000:]}", pytrace=False)
        try:
            ldap3.Connection(ldap3.Server(url, connect_timeout=1), ROOT_DN, ROOT_PW, auto_bind=True).unbind()
            return
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.1)
    pytest.fail("slapd did not start listening within 10 s", pytrace=False)


def _admin_conn(url: str):
    import ldap3

    return ldap3.Connection(ldap3.Server(url), ROOT_DN, ROOT_PW, auto_bind=True)


def _load_directory(url: str) -> None:
    conn = _admin_conn(url)
    assert conn.add(BASE, ["dcObject", "organization"], {"o": "가람은행", "dc": "bank"})
    for ou in ("people", "groups"):
        assert conn.add(f"ou={ou},{BASE}", ["organizationalUnit"], {"ou": ou})
    for uid, (password, _) in STAFF.items():
        assert conn.add(
            f"uid={uid},ou=people,{BASE}",
            ["inetOrgPerson"],
            {"uid": uid, "cn": uid, "sn": uid, "userPassword": password},
        )
    for group in ("tellers", "compliance-officers", "kofin-admins", "empty"):
        members = [f"uid={u},ou=people,{BASE}" for u, (_, gs) in STAFF.items() if group in gs] + [
            ROOT_DN
        ]  # never empty
        assert conn.add(f"cn={group},ou=groups,{BASE}", ["groupOfNames"], {"cn": group, "member": members})
    conn.unbind()


def _directory_cfg(url: str):
    from kofin.serve.ldap_login import DirectoryConfig

    return DirectoryConfig(
        url=url, user_dn=f"uid={{user}},ou=people,{BASE}", group_base=f"ou=groups,{BASE}", mapping=MAPPING
    )


# ---------------------------------------------------------------- the directory itself


def test_ldap_bind_checks_the_password_and_maps_the_groups(slapd):
    from kofin.serve.ldap_login import Directory
    from kofin.serve.users import ADMINS_GROUP

    directory = Directory(_directory_cfg(slapd))
    park = directory.authenticate("park", "park-ldap-pass")
    assert park is not None and park.groups == ["branch", "compliance"] and not park.admin and park.source == "ldap"
    kim = directory.authenticate("kim", "kim-ldap-pass")
    assert kim.groups == ["branch"]
    choi = directory.authenticate("choi", "choi-ldap-pass")
    assert choi.admin and choi.groups == [ADMINS_GROUP]
    assert directory.authenticate("park", "wrong-pass") is None
    assert directory.authenticate("nobody", "park-ldap-pass") is None
    assert directory.authenticate("park", "") is None  # an empty password would be an anonymous bind
    assert (
        directory.authenticate("*", "x") is None and directory.authenticate("park,ou=people", "park-ldap-pass") is None
    )


def test_an_unreachable_directory_is_a_connection_error(slapd):
    from kofin.serve.ldap_login import Directory

    cfg = _directory_cfg(slapd).model_copy(update={"url": f"ldap://127.0.0.1:{free_port()}", "timeout_s": 1.0})
    with pytest.raises(ConnectionError, match="directory ldap://127.0.0.1"):
        Directory(cfg).authenticate("park", "park-ldap-pass")


# ---------------------------------------------------------------- the chat signing on through it


@pytest.fixture(scope="module")
def chat_with_directory(slapd, bundled_kb, tmp_path_factory):
    directory = json.dumps(_directory_cfg(slapd).model_dump(mode="json"))
    sso = json.dumps({"proxies": ["127.0.0.2"], "mapping": MAPPING})
    cfg = demo_config(bundled_kb, tmp_path_factory.mktemp("ldap") / "serve", f"directory={directory}", f"sso={sso}")
    with serving(cfg) as (chat, url, sessions):
        yield chat, url, sessions


def _ask(url: str, call, question: str) -> str:
    from gradio_client import Client

    cookie = next(c for c in call.jar if c.name == "kofin-session")
    client = Client(url + "/", verbose=False, headers={"Cookie": f"kofin-session={cookie.value}"})
    _, _, sources = client.predict(question, [], api_name="/ask")
    return sources


def test_directory_staff_log_in_and_get_their_mapped_groups_at_each_login(slapd, chat_with_directory):
    chat, url, sessions = chat_with_directory
    park = login(url, "park", "park-ldap-pass")
    assert park("/config")[0] == 200
    assert chat.users.get("park").groups == ["branch", "compliance"]
    assert RESTRICTED_DOC in _ask(url, park, RESTRICTED_QUESTION)
    events = [json.loads(line) for line in chat.cfg.audit_path.read_text(encoding="utf-8").splitlines()]
    assert any(e.get("event") == "login" and e["user"] == "park" and e["source"] == "ldap" for e in events)
    # Moved out of compliance in the directory: the next login maps the groups again.
    conn = _admin_conn(slapd)
    import ldap3

    assert conn.modify(
        f"cn=compliance-officers,ou=groups,{BASE}", {"member": [(ldap3.MODIFY_DELETE, [f"uid=park,ou=people,{BASE}"])]}
    )
    conn.unbind()
    park_again = login(url, "park", "park-ldap-pass")
    assert chat.users.get("park").groups == ["branch"]
    assert RESTRICTED_DOC not in _ask(url, park_again, RESTRICTED_QUESTION)
    assert login(url, "park", "wrong-pass")("/config")[0] == 401


def test_yaml_users_still_log_in_beside_the_directory(chat_with_directory):
    _, url, _ = chat_with_directory
    assert login(url, "teller")("/config")[0] == 200
    assert login(url, "kim", "kim-ldap-pass")("/config")[0] == 200


def _from(address: str, url: str, path: str, headers: dict) -> tuple[int, str, str]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30, source_address=(address, 0))
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read().decode("utf-8", "replace")
    conn.close()
    return response.status, body, response.getheader("set-cookie") or ""


def test_the_sso_header_is_believed_only_from_the_configured_proxy(chat_with_directory):
    chat, url, sessions = chat_with_directory
    host = {"Host": urllib.parse.urlsplit(url).netloc}
    forged = {**host, "X-Remote-User": "mallory", "X-Remote-Groups": "compliance-officers"}
    status, _, cookie = _from("127.0.0.1", url, "/config", forged)  # not the proxy: the header is anyone's to send
    assert status == 401 and "kofin-session" not in cookie and chat.users.get("mallory") is None
    status, _, cookie = _from(
        "127.0.0.2", url, "/config", {**host, "X-Remote-User": "lee", "X-Remote-Groups": "tellers, compliance-officers"}
    )
    assert status == 200 and "kofin-session=" in cookie
    assert chat.users.get("lee").groups == ["branch", "compliance"] and not chat.users.get("lee").admin
    # The session the proxy's request opened carries on with the cookie, as any other session.
    token = cookie.split("kofin-session=", 1)[1].split(";", 1)[0]
    assert sessions.resolve(token).row.user == "lee" and sessions.resolve(token).row.source == "sso"
    # A YAML user signed on by the proxy keeps the YAML groups, whatever the header says.
    status, _, cookie = _from(
        "127.0.0.2", url, "/config", {**host, "X-Remote-User": "teller", "X-Remote-Groups": "kofin-admins"}
    )
    token = cookie.split("kofin-session=", 1)[1].split(";", 1)[0]
    assert status == 200 and sessions.resolve(token).row.groups == ["branch"] and not sessions.resolve(token).row.admin


def test_a_yaml_teller_cannot_reach_compliance_documents_through_the_directory_config(chat_with_directory):
    _, url, _ = chat_with_directory
    teller = login(url, "teller", PASSWORDS["teller"])
    sources = _ask(url, teller, RESTRICTED_QUESTION)
    assert RESTRICTED_DOC not in sources
    assert "kofin-source" in _ask(url, teller, OPEN_QUESTION)
