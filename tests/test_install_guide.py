"""docs/install.md's commands, run as the guide gives them (paths and conninfos pointed at a
temp dir and a test cluster): the certificate and its key mode, configtest with it, the module's
role and the schema install into an existing CRM database (twice: the upgrade), the SYNC_MASTER
unlock script. The package install/upgrade commands run in CI (tests/package-test.sh)."""
import os
import re
import subprocess

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(TOP, "docs", "install.md")
SQL = os.path.join(TOP, "sql")


def blocks():
    """The guide's ```sh blocks, joined lines (backslash continuations), comments dropped."""
    text = open(GUIDE, encoding="utf-8").read()
    out = []
    for b in re.findall(r"```sh\n(.*?)```", text, re.S):
        b = b.replace("\\\n", " ")
        out.append([re.sub(r"\s+#.*$", "", l).strip() for l in b.splitlines()
                    if l.strip() and not l.strip().startswith("#")])
    return out


def command(prefix):
    for b in blocks():
        for line in b:
            if line.startswith(prefix):
                return line
    raise AssertionError(f"docs/install.md has no command starting with {prefix!r}")


def sh(cmd, env=None):
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"{cmd}\n{r.stdout}{r.stderr}"
    return r.stdout


def test_certificate_commands_make_a_key_the_module_accepts(httpd, tmp_path):
    d = str(tmp_path)
    os.chmod(d, 0o755)
    sh(command("openssl req -x509").replace("/etc/apache2/", d + "/"))
    sh(command("chmod 600").replace("/etc/apache2/", d + "/"))
    key, crt = os.path.join(d, "rmsync-client-key.pem"), os.path.join(d, "rmsync-client-cert.pem")
    assert os.stat(key).st_mode & 0o777 == 0o600
    h = httpd()
    h.write_conf(rmsync="\n".join([
        "RMSyncGraphTenant contoso.onmicrosoft.com",
        "RMSyncGraphClientId 11111111-2222-3333-4444-555555555555",
        f"RMSyncGraphClientCertificate {crt} {key}",
    ]))
    rc, out = h.configtest()
    assert rc == 0 and "Syntax OK" in out, out
    # the guide's warning holds: a key others can read is refused, naming the directive
    os.chmod(key, 0o644)
    rc, out = h.configtest()
    assert rc != 0 and "RMSyncGraphClientCertificate" in out, out


def test_database_commands_install_into_an_existing_crm(pg):
    # an existing CRM database: the crm schema only (what the CRM brings), no rmsync schema
    db = pg.create_database("guide_crm", schema=False)
    env = dict(pg.env(), PGDATABASE=db)
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f",
                    os.path.join(SQL, "crm", "crm_schema.sql")], env=env, check=True,
                   capture_output=True)
    conn = f"host={pg.sockdir} port={pg.port} dbname={db} user=postgres"
    role = command("sudo -u postgres psql -d crm -c")
    role = role.replace("ROLE rmsync", "ROLE guide_app").replace("sudo -u postgres psql -d crm",
                                                                  f'psql -X "{conn}"')
    sh(role, env)
    install = command("/usr/share/mod-rmsync/sql/install.sh --app-role rmsync")
    install = (install.replace("/usr/share/mod-rmsync/sql", SQL).replace("--app-role rmsync", "--app-role guide_app")
               .replace('"host=/var/run/postgresql dbname=crm user=postgres"', f'"{conn}"'))
    for _ in range(2):               # again after an upgrade: idempotent
        assert "rmsync v" in sh(install, env)
    assert pg.val("SELECT has_table_privilege('guide_app', 'rmsync.event_link', 'INSERT')", db=db) == "t"
    assert pg.val("SELECT rmsync.master_user_state()", db=db) == "locked"
    unlock = command("psql \"host=... dbname=crm user=postgres\" -f /usr/share/mod-rmsync/sql/manualdeploy/UpdateSyncMasterUser.sql")
    sh(unlock.replace('"host=... dbname=crm user=postgres"', f'-X "{conn}"')
             .replace("/usr/share/mod-rmsync/sql", SQL), env)
    assert pg.val("SELECT rmsync.master_user_state()", db=db) != "locked"
