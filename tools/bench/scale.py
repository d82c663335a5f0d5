"""`just bench --scale MAX`: how a re-run of N unchanged users grows with N.

At each size (1,000, 10,000, 100,000, up to MAX) the same Synapse holds
exactly N users (plus the module's service account and the template), so
the module reads the whole server as it would in production. Measured, each
with the module's peak memory:
  - the re-run with passwords declared (username, password, admin);
  - the re-run with every attribute the setup writes declared (display
    name, admin, locked, shadow_banned, a rate-limit override, an SSO
    identity, an e-mail address), through the admin API alone and with
    `synapse_database`;
  - the same `synapse_database` re-run on a Synapse on PostgreSQL;
  - the playbook re-run (tools/bench/module.yml) with passwords, to show
    what passing the users through ansible-playbook costs.
Then the MAS contract server: creating and re-running 10,000 users (or MAX),
with the number of requests of the re-run.

Creating users is not what is measured and must not be the bound: the
module makes one template user with every attribute, then that user's rows
are copied for each user straight into the database of the fresh Synapse,
which has never seen those accounts (so no cache of it holds them).
"""

import json
import os
import platform
import sqlite3
import subprocess
import tempfile
import shutil
import time

import bench

SIZES = (1_000, 10_000, 100_000)
# Through the admin API alone, a user declaring what Synapse's list does not
# show is read on its own (about 5 ms each, Synapse-bound and linear): ten
# minutes at 100,000 users, so that re-run stops at this size.
MOST_READ_ALONE = 10_000
TEMPLATE = "scaletemplate"
# The template's rows, the column that names the user in each, and what in
# them is made per user (every text value holding the template's localpart).
USER_TABLES = {
    "users": "name",
    "profiles": "full_user_id",
    "ratelimit_override": "user_id",
    "user_external_ids": "user_id",
    "user_threepids": "user_id",
}
MAS_USERS = 10_000


def localpart(i):
    return f"scale{i:06}"


def with_passwords(count):
    return [{"username": localpart(i), "password": f"scale-password-{i}-{i * 7919 % 100_003}", "admin": False} for i in range(count)]


def with_every_attribute(count):
    """What the template was made with, for each user (its localpart in place of the template's)."""
    return [dict(u, **attributes(u["username"])) for u in with_passwords(count)]


def attributes(name):
    return {
        "displayname": f"Scale user {name}",
        "locked": False,
        "shadow_banned": False,
        "ratelimit": {"messages_per_second": 10, "burst_count": 50},
        "external_ids": [{"auth_provider": "oidc-scale", "external_id": name}],
        "emails": [f"{name}@example.com"],
    }


class Database:
    """Synapse's database, through the DB-API driver of its kind."""

    def __init__(self, url):
        if url.startswith("postgres"):
            import psycopg2

            self.connection, self.placeholder = psycopg2.connect(url), "%s"
        else:
            self.connection, self.placeholder = sqlite3.connect(url, timeout=60), "?"

    def copy_template(self, server_name, start, stop):
        """The template's rows in USER_TABLES, once for each user start..stop."""
        cursor = self.connection.cursor()
        for table, column in USER_TABLES.items():
            template_id = f"@{TEMPLATE}:{server_name}"
            cursor.execute(f"SELECT * FROM {table} WHERE {column} = {self.placeholder}", (template_id,))
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
            if not rows:
                raise SystemExit(f"bench: the template has no row in {table}")
            marks = ", ".join([self.placeholder] * len(names))
            insert = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})"
            for row in rows:
                cursor.executemany(insert, (per_user(row, localpart(i)) for i in range(start, stop)))
        self.connection.commit()

    def close(self):
        self.connection.close()


def per_user(row, name):
    return tuple(value.replace(TEMPLATE, name) if isinstance(value, str) else value for value in row)


class Server:
    """A fresh Synapse grown size by size."""

    def __init__(self, database_kind, workdir, concurrency):
        self.launcher, self.info = bench.start_server("synapse.py", f"--database={database_kind}")
        self.kind = database_kind
        self.concurrency = concurrency
        self.workdir = workdir
        self.connection = {
            "homeserver_url": self.info["url"],
            "registration_shared_secret": self.info["registration_shared_secret"],
            "token_cache_dir": os.path.join(workdir, f"token-cache-{database_kind}"),
        }
        self.held = 0
        template = dict(username=TEMPLATE, password="scale-template-password", admin=False, **attributes(TEMPLATE))
        self.run([template], synapse_database=False, unchanged=False)

    def grow_to(self, count):
        database = Database(self.info["database"])
        started = time.monotonic()
        database.copy_template(self.info["server_name"], self.held, count)
        database.close()
        print(f"  {self.kind}: {count - self.held} users copied in {time.monotonic() - started:.1f} s", flush=True)
        self.held = count

    def run(self, user_list, synapse_database, unchanged=True, **options):
        connection = dict(self.connection, **options)
        if synapse_database:
            connection["synapse_database"] = self.info["database"]
        seconds, output, peak_kib = bench.run_module(connection, user_list, self.concurrency, self.workdir)
        if unchanged:
            assert not output["changed"], f"a re-run must change nothing: {output['msg']}"
            assert len(output["users"]) == len(user_list)
        return seconds, peak_kib

    def stop(self):
        bench.stop_server(self.launcher)


def playbook_rerun(server, user_list, workdir):
    play_vars = {
        "homeserver_url": server.info["url"],
        "shared_secret": server.info["registration_shared_secret"],
        "token_cache_dir": server.connection["token_cache_dir"],
        "users": user_list,
    }
    return bench.run_playbook("module.yml", play_vars, workdir)


def main(most, concurrency):
    sizes = [n for n in SIZES if n <= most] or [most]
    workdir = tempfile.mkdtemp(prefix="matrix-user-scale-")
    rows, mas = [], {}
    sqlite_server = postgres_server = mas_launcher = None
    try:
        sqlite_server = Server("sqlite", workdir, concurrency)
        postgres_server = Server("postgres", workdir, concurrency)
        for n in sizes:
            print(f"scale: {n} users ...", flush=True)
            sqlite_server.grow_to(n)
            postgres_server.grow_to(n)
            passwords, everything = with_passwords(n), with_every_attribute(n)
            row = {"users": n}
            row["passwords"] = sqlite_server.run(passwords, synapse_database=False)
            print(f"  re-run with passwords: {row['passwords'][0]:.2f} s", flush=True)
            # Every account declared (the template too), so nothing is locked: the cost is the check.
            everyone = passwords + [{"username": TEMPLATE, "password": "scale-template-password"}]
            row["undeclared"] = sqlite_server.run(everyone, synapse_database=False, undeclared="lock")
            print(f"  re-run with passwords and undeclared: lock: {row['undeclared'][0]:.2f} s", flush=True)
            if n <= MOST_READ_ALONE:
                row["attributes"] = sqlite_server.run(everything, synapse_database=False)
                print(f"  re-run with every attribute: {row['attributes'][0]:.2f} s", flush=True)
            row["sqlite"] = sqlite_server.run(everything, synapse_database=True)
            row["postgres"] = postgres_server.run(everything, synapse_database=True)
            print(f"  synapse_database re-runs: {row['sqlite'][0]:.2f} s, {row['postgres'][0]:.2f} s", flush=True)
            row["playbook"] = playbook_rerun(sqlite_server, passwords, workdir)
            row["loading"] = bench.run_playbook("users-only.yml", {"users": passwords}, workdir)
            row["empty"] = bench.run_playbook("users-only.yml", {"users": []}, workdir)
            print(f"  playbook re-run with passwords: {row['playbook']:.2f} s; loading the users only: {row['loading']:.2f} s", flush=True)
            rows.append(row)
        postgres_server.stop()
        postgres_server = None

        count = min(MAS_USERS, most)
        print(f"scale: MAS contract server, create {count} and re-run ...", flush=True)
        mas_launcher, mas_info = bench.start_server("mas.py")
        connection = {"homeserver": "mas", "mas_url": mas_info["url"], "mas_client_id": mas_info["client_id"], "mas_client_secret": mas_info["client_secret"]}
        in_mas = bench.mas_users(count)
        mas["create"], _, _ = bench.run_module(connection, in_mas, concurrency, workdir)
        before = len(bench.mas_requests(mas_info))
        mas["rerun"], output, mas["peak"] = bench.run_module(connection, in_mas, concurrency, workdir)
        assert not output["changed"], "a re-run must change nothing"
        answered = bench.mas_requests(mas_info)
        mas["requests"], mas["users"] = len(answered) - before, count
        broken = [e for e in answered if e["request_valid"] is False or e["response_valid"] is False]
        assert not broken, f"requests or answers that break the MAS spec: {broken[:3]}"
    finally:
        for server in (sqlite_server, postgres_server):
            if server:
                server.stop()
        if mas_launcher:
            bench.stop_server(mas_launcher)
        # The args and vars files hold the shared secret and the passwords.
        shutil.rmtree(workdir, ignore_errors=True)
    write_section(most, concurrency, rows, mas)
    draw_chart(rows)


def synapse_version():
    return subprocess.run(
        [os.path.join(bench.VENV, "python"), "-c", "import importlib.metadata as m; print(m.version('matrix-synapse'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()


def write_section(most, concurrency, rows, mas):
    def cell(seconds, n):
        return f"{seconds:.2f} s ({seconds / n * 1000:.3f} ms/user)"

    def peak(kib):
        return f"{kib / 1024:.1f} MiB"

    lines = [
        "## At scale",
        "",
        f"Written by `just bench --scale {most}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {bench.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()} for Ansible.",
        f"Synapse {synapse_version()}, module concurrency {concurrency}. Creating the users is not measured: the module made one",
        "template user with every attribute, whose rows (users, profiles, ratelimit_override, user_external_ids,",
        "user_threepids) were then copied for each user straight into the database of a fresh Synapse that had never",
        "seen those accounts. At each size the server holds exactly those N users (plus the module's service account",
        "and the template), and every re-run changes nothing. \"passwords\": each user declares a username, its own",
        "password and `admin` (the password is not compared: `update_password: on_create`, the default, but every",
        "password is masked in the output). \"every attribute\": also a display name, `locked`, `shadow_banned`, a",
        "`ratelimit` override, one SSO identity and one e-mail address; Synapse's user list shows neither the override,",
        "the identities nor the addresses, so through the admin API alone each user is read on its own, while",
        "`synapse_database` confirms them for all users at once. \"`undeclared: lock`\": the passwords re-run with the",
        "template declared too, so that the server's every account is declared: the list is read a second time and",
        "nothing is locked. Peak memory is the module's maximum resident size (GNU time).",
        "",
        "| users | re-run, passwords | peak | same with `undeclared: lock` | peak | re-run, every attribute | peak | every attribute, synapse_database (SQLite) | peak | same on PostgreSQL | peak |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        n = row["users"]
        attributes = row.get("attributes")
        lines.append(
            f"| {n} | {cell(row['passwords'][0], n)} | {peak(row['passwords'][1])} "
            f"| {cell(row['undeclared'][0], n)} | {peak(row['undeclared'][1])} "
            + (f"| {cell(attributes[0], n)} | {peak(attributes[1])} " if attributes else f"| not run (over {MOST_READ_ALONE}) | ")
            + f"| {cell(row['sqlite'][0], n)} | {peak(row['sqlite'][1])} "
            f"| {cell(row['postgres'][0], n)} | {peak(row['postgres'][1])} |"
        )
    per_user = [row["passwords"][0] / row["users"] for row in rows]
    lines += [
        "",
        f"Re-run with passwords, time per user: highest / lowest across the sizes = {max(per_user) / min(per_user):.2f}.",
    ]
    lines += [
        "",
        "Through Ansible: `ansible-playbook` running tools/bench/module.yml (the users in an extra-vars file, one task,",
        "`no_log: true`), the same playbook's users only loaded and counted (tools/bench/users-only.yml), and that",
        "playbook with no users (Ansible's fixed cost).",
        "",
        "| users | playbook re-run, passwords | its cost above the binary | loading the users only | no users (fixed) | loading, above no users |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        n = row["users"]
        lines.append(
            f"| {n} | {cell(row['playbook'], n)} | {(row['playbook'] - row['passwords'][0]) / n * 1000:.3f} ms/user "
            f"| {cell(row['loading'], n)} | {row['empty']:.2f} s | {(row['loading'] - row['empty']) / n * 1000:.3f} ms/user |"
        )
    lines += [
        "",
        "Most of the playbook's cost per user is Ansible's own, before the module starts: ansible-core 2.19 reads the",
        "extra-vars file with `DataLoader.load_from_file` (ansible/parsing/dataloader.py), whose JSON decoder tags every",
        "value with where it came from (data tagging), and which then returns `copy.deepcopy` of the tagged data, value",
        "by value; the task's templating of `users` and writing the args file follow. `no_log` is not the bound.",
    ]
    if mas:
        lines += [
            "",
            "| MAS contract server (tools/servers/mas.py, a Python stand-in) | users | total (s) | per user (ms) | HTTP requests | peak |",
            "|---|---:|---:|---:|---:|---:|",
            f"| create | {mas['users']} | {mas['create']:.2f} | {mas['create'] / mas['users'] * 1000:.2f} | | |",
            f"| re-run | {mas['users']} | {mas['rerun']:.2f} | {mas['rerun'] / mas['users'] * 1000:.2f} | {mas['requests']} | {peak(mas['peak'])} |",
        ]
    lines += ["", "![time and peak memory against N](benchmarks-scale.png)", ""]
    bench.write_scale_section("\n".join(lines))


def draw_chart(rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [row["users"] for row in rows]
    series = {
        "re-run, passwords": "passwords",
        "re-run, passwords, undeclared: lock": "undeclared",
        "re-run, every attribute": "attributes",
        "every attribute, synapse_database (SQLite)": "sqlite",
        "every attribute, synapse_database (PostgreSQL)": "postgres",
    }
    figure, (times, memory) = plt.subplots(1, 2, figsize=(11, 4.5))
    for label, key in series.items():
        measured = [(row["users"], row[key]) for row in rows if key in row]
        times.plot([n for n, _ in measured], [m[0] for _, m in measured], marker="o", label=label)
        memory.plot([n for n, _ in measured], [m[1] / 1024 for _, m in measured], marker="o", label=label)
    times.plot(sizes, [row["playbook"] for row in rows], marker="o", label="playbook re-run, passwords")
    for axes in (times, memory):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("users (N)")
        axes.grid(True, which="both", alpha=0.3)
    times.set_ylabel("seconds")
    times.set_title("re-run of N unchanged users: time")
    memory.set_ylabel("MiB")
    memory.set_title("module peak memory")
    times.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(os.path.join(bench.ROOT, "docs", "benchmarks-scale.png"), dpi=100)
