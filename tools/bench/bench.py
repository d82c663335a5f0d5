#!/usr/bin/env python3
"""`just bench [N]`: how fast matrix_user manages N users, side by side with
the server's own limit and today's one-task-per-user loop, all in one run on
one real Synapse (default bcrypt rounds, Synapse's default rate limits).
Then the rows labelled "MAS contract server": the module against
tools/servers/mas.py, the Python stand-in for MAS that the tests use; they
count the HTTP requests of a re-run (MAS is read in pages, not once per user)
and say nothing about MAS's own speed.

Writes docs/benchmarks.md and docs/benchmarks.png. Figures are ratios within
this run; absolute times depend on the machine.

`just bench --scale MAX`: how the re-run of unchanged users grows with N, at
1,000, 10,000 and 100,000 users (the sizes up to MAX). Creating the users is
not measured and is not the bound: one template user is made by the module
with every attribute, then its rows (users, profiles, ratelimit_override,
user_external_ids, user_threepids) are copied for each user straight into the
database of a fresh Synapse (SQLite, then PostgreSQL) that has never seen
those accounts. Writes docs/benchmarks-scale.md and docs/benchmarks-scale.png.
"""

import argparse
import hashlib
import hmac
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV = os.path.join(ROOT, ".venv", "bin")
# The binaries the collection ships, both built by `just build` into library/.
SHIPPED_BINARIES = {
    arch: os.path.join(ROOT, "library", f"matrix_user_linux_{arch}") for arch in ("x86_64", "aarch64")
}
MODULE = SHIPPED_BINARIES["x86_64"]
BASELINE_SAMPLE = 20
# The declared registration tokens whose re-run is measured (issue 24).
TOKENS = 500


def start_server(script, *flags):
    """One of tools/servers/, ephemeral: it serves until its stdin closes."""
    launcher = subprocess.Popen(
        [os.path.join(VENV, "python"), os.path.join(ROOT, "tools/servers", script), "--ephemeral", *flags],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    info = json.loads(launcher.stdout.readline())
    return launcher, info


def stop_server(launcher):
    launcher.stdin.close()
    launcher.wait()


def post_json(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def register_directly(url, secret, username, password, admin=False):
    """One shared-secret registration, the way Synapse documents it."""
    with urllib.request.urlopen(f"{url}/_synapse/admin/v1/register", timeout=60) as response:
        nonce = json.load(response)["nonce"]
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), username.encode(), password.encode(), b"admin" if admin else b"notadmin"]))
    return post_json(
        f"{url}/_synapse/admin/v1/register",
        {"nonce": nonce, "username": username, "password": password, "admin": admin, "mac": mac.hexdigest(), "inhibit_login": not admin},
    )


def public_room(info, alias_name):
    """A public room with the alias #alias_name, made by an admin of the bench's own; returns the alias."""
    token = register_directly(info["url"], info["registration_shared_secret"], "bench-admin", "bench-admin-password", admin=True)["access_token"]
    request = urllib.request.Request(
        f"{info['url']}/_matrix/client/v3/createRoom",
        data=json.dumps({"preset": "public_chat", "room_alias_name": alias_name}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        json.load(response)
    return f"#{alias_name}:{info['server_name']}"


def with_attributes(user_list, room):
    """Each user declaring what issue 12 added: a lock, a shadow-ban, a rate-limit
    override, an SSO identity and one room."""
    return [
        dict(u, locked=False, shadow_banned=False, ratelimit={"messages_per_second": 10, "burst_count": 50},
             external_ids=[{"auth_provider": "oidc-bench", "external_id": u["username"]}], rooms=[room])
        for u in user_list
    ]


def server_limit(info, count, concurrency):
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda i: register_directly(info["url"], info["registration_shared_secret"], f"limit{i:05}", f"limit-password-{i}"), range(count)))
    return time.monotonic() - started


def users(prefix, count, admin_every=0):
    return [
        {"username": f"{prefix}{i:05}", "password": f"{prefix}-password-{i}", "admin": bool(admin_every) and i % admin_every == 0}
        for i in range(count)
    ]


def mas_users(count):
    """Users with a password (update_password: on_create, the default: with
    always, every re-run would check each password by a login, which MAS
    rate-limits), an admin flag (every tenth an admin) and an e-mail address."""
    return [dict(u, email=f"{u['username']}@example.com") for u in users("mas", count, admin_every=10)]


def mas_requests(info):
    """The requests the MAS contract server has answered so far, from its request log."""
    with open(info["request_log"]) as f:
        return [json.loads(line) for line in f]


def run_module(connection, user_list, concurrency, workdir):
    """Runs the binary as Ansible does with the server's `connection`
    parameters; returns (seconds, output, peak KiB)."""
    return run_binary(dict(connection, users=user_list, concurrency=concurrency), workdir)


def run_token_module(connection, tokens, workdir):
    """Runs the binary as the module matrix_registration_token (as its
    action plugin names it) on the declared `tokens`; as run_module."""
    return run_binary(dict(connection, tokens=tokens, _matrix_user_module="matrix_registration_token"), workdir)


def registration_tokens(count):
    """`count` tokens, each with a limit and an expiry, as a role's
    matrix_registration_tokens would declare them."""
    return [{"token": f"bench-{i:04d}", "uses_allowed": 1 + i % 5, "expires": "2099-12-31T23:59:59Z"} for i in range(count)]


def run_binary(args, workdir):
    path = os.path.join(workdir, "args.json")
    with open(path, "w") as f:
        json.dump(args, f)
    # GNU time measures the module alone: a child forked by Python would
    # count Python's memory too, from before it became the module.
    peak_path = os.path.join(workdir, "peak")
    started = time.monotonic()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak_path, MODULE, path], capture_output=True, text=True)
    seconds = time.monotonic() - started
    stdout = result.stdout
    with open(peak_path) as f:
        peak_kib = f.read().split()[-1]
    output = json.loads(stdout)
    if output.get("failed"):
        raise SystemExit(f"the module failed: {output['msg']}")
    return float(seconds), output, int(peak_kib)


def run_playbook(playbook, extra_vars, workdir):
    path = os.path.join(workdir, "vars.json")
    with open(path, "w") as f:
        json.dump(dict(extra_vars, ansible_python_interpreter=os.path.join(VENV, "python")), f)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "collections"), PATH=VENV + ":" + os.environ["PATH"])
    started = time.monotonic()
    subprocess.run(
        [os.path.join(VENV, "ansible-playbook"), "-i", "localhost,", os.path.join(ROOT, "tools/bench", playbook), "-e", f"@{path}"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.machine()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("users", nargs="?", type=int, default=200, help="N, the number of users (default 200)")
    parser.add_argument("--concurrency", type=int, default=8, help="the module's concurrency (its default is 8)")
    parser.add_argument("--scale", type=int, metavar="MAX", help="measure re-runs at 1,000, 10,000 and 100,000 users (up to MAX) instead")
    options = parser.parse_args()
    if options.scale:
        import scale

        scale.main(options.scale, options.concurrency)
        return
    n, concurrency = options.users, options.concurrency
    sample = min(n, BASELINE_SAMPLE)
    sizes = binary_sizes()

    launcher, info = start_server("synapse.py", "--default-rate-limits")
    workdir = tempfile.mkdtemp(prefix="matrix-user-bench-")
    cache_dir = os.path.join(workdir, "token-cache")
    synapse = {"homeserver_url": info["url"], "registration_shared_secret": info["registration_shared_secret"], "token_cache_dir": cache_dir}
    mas_launcher = None
    figures, mas_rerun_requests = {}, 0
    try:
        # Register the module's service account first, so no timed run pays for it.
        run_module(synapse, [], concurrency, workdir)

        print(f"server limit: {n} direct registrations, {concurrency} at a time ...", flush=True)
        figures["server limit: create"] = server_limit(info, n, concurrency)

        print(f"module binary: create {n}, re-run, flip admin of {n // 2} ...", flush=True)
        created = users("bin", n)
        figures["module (binary): create"], _, create_peak = run_module(synapse, created, concurrency, workdir)
        figures["module (binary): re-run"], output, rerun_peak = run_module(synapse, created, concurrency, workdir)
        assert not output["changed"], "a re-run must change nothing"
        flipped = [dict(u, admin=True) for u in created[: n // 2]]
        figures["module (binary): flip admin"], output, flip_peak = run_module(synapse, flipped, concurrency, workdir)
        peak_kib = max(create_peak, rerun_peak, flip_peak)
        assert sum(u["changed"] for u in output["users"]) == n // 2

        print(f"module binary: declare 5 more attributes of {n}, re-run ...", flush=True)
        declared = with_attributes(flipped + created[n // 2 :], public_room(info, "bench"))
        figures["module (binary): set 5 attributes"], output, _ = run_module(synapse, declared, concurrency, workdir)
        assert all(u["changed"] for u in output["users"]), "every user gets its attributes"
        figures["module (binary): re-run, 5 attributes"], output, attributes_peak = run_module(synapse, declared, concurrency, workdir)
        assert not output["changed"], "a re-run must change nothing"
        # The same re-run, confirmed in Synapse's database (homeserver.db, read only).
        figures["module (binary): re-run, 5 attributes, synapse_database"], output, database_peak = run_module(
            dict(synapse, synapse_database=info["database"]), declared, concurrency, workdir
        )
        assert not output["changed"], "a re-run must change nothing"
        peak_kib = max(peak_kib, attributes_peak, database_peak)

        print(f"module binary: declare {TOKENS} registration tokens, re-run ...", flush=True)
        declared_tokens = registration_tokens(TOKENS)
        _, output, _ = run_token_module(synapse, declared_tokens, workdir)
        assert all(t["action"] == "created" for t in output["tokens"]), "every token is created"
        figures["module (binary): registration tokens, re-run"], output, tokens_peak = run_token_module(
            synapse, declared_tokens, workdir
        )
        assert not output["changed"], "a re-run must change nothing"
        peak_kib = max(peak_kib, tokens_peak)

        print(f"module via ansible-playbook: create {n}, re-run ...", flush=True)
        play_vars = {"homeserver_url": info["url"], "shared_secret": info["registration_shared_secret"], "token_cache_dir": cache_dir}
        played = users("play", n)
        figures["module (playbook): create"] = run_playbook("module.yml", dict(play_vars, users=played), workdir)
        figures["module (playbook): re-run"] = run_playbook("module.yml", dict(play_vars, users=played), workdir)

        print(f"baseline loop: create {sample}, re-run ...", flush=True)
        base_vars = dict(play_vars, register_new_matrix_user=os.path.join(VENV, "register_new_matrix_user"))
        based = users("base", sample)
        figures["baseline loop: create"] = run_playbook("baseline.yml", dict(base_vars, users=based), workdir)
        figures["baseline loop: re-run"] = run_playbook("baseline.yml", dict(base_vars, users=based), workdir)

        print(f"module binary against the MAS contract server: create {n}, re-run ...", flush=True)
        mas_launcher, mas_info = start_server("mas.py")
        mas = {"homeserver": "mas", "mas_url": mas_info["url"], "mas_client_id": mas_info["client_id"], "mas_client_secret": mas_info["client_secret"]}
        in_mas = mas_users(n)
        figures["MAS contract server: create"], _, mas_create_peak = run_module(mas, in_mas, concurrency, workdir)
        before = len(mas_requests(mas_info))
        figures["MAS contract server: re-run"], output, mas_rerun_peak = run_module(mas, in_mas, concurrency, workdir)
        assert not output["changed"], "a re-run must change nothing"
        peak_kib = max(peak_kib, mas_create_peak, mas_rerun_peak)
        answered = mas_requests(mas_info)
        mas_rerun_requests = len(answered) - before
        broken = [e for e in answered if e["request_valid"] is False or e["response_valid"] is False]
        assert not broken, f"requests or answers that break the MAS spec: {broken}"
    finally:
        stop_server(launcher)
        if mas_launcher:
            stop_server(mas_launcher)
        # The args and vars files hold the shared secret and the passwords.
        shutil.rmtree(workdir, ignore_errors=True)

    counts = {
        name: (sample if name.startswith("baseline") else n // 2 if "flip" in name else TOKENS if "tokens" in name else n)
        for name in figures
    }
    per_user = {name: figures[name] / counts[name] for name in figures}
    ratios = [
        ("module create vs server limit (users/s, higher is better)",
         per_user["server limit: create"] / per_user["module (binary): create"]),
        ("module re-run vs baseline re-run, per user (times faster)",
         per_user["baseline loop: re-run"] / per_user["module (binary): re-run"]),
        ("module via playbook re-run vs baseline re-run, per user (times faster)",
         per_user["baseline loop: re-run"] / per_user["module (playbook): re-run"]),
        ("module create vs baseline create, per user (times faster)",
         per_user["baseline loop: create"] / per_user["module (binary): create"]),
        ("re-run with 5 more attributes declared vs plain re-run, per user (times slower)",
         per_user["module (binary): re-run, 5 attributes"] / per_user["module (binary): re-run"]),
        ("re-run with 5 more attributes declared: ms per 100 users",
         per_user["module (binary): re-run, 5 attributes"] * 100 * 1000),
        ("re-run with 5 more attributes declared, with synapse_database, vs plain re-run, per user (times slower)",
         per_user["module (binary): re-run, 5 attributes, synapse_database"] / per_user["module (binary): re-run"]),
        ("re-run with 5 more attributes declared, with synapse_database: ms per 100 users",
         per_user["module (binary): re-run, 5 attributes, synapse_database"] * 100 * 1000),
        (f"re-run of {TOKENS} declared registration tokens (one read of Synapse's list): ms per 100 tokens",
         per_user["module (binary): registration tokens, re-run"] * 100 * 1000),
        ("MAS contract server: re-run, ms per 100 users",
         per_user["MAS contract server: re-run"] * 100 * 1000),
        (f"MAS contract server: HTTP requests of the re-run of {n} users (its request log)",
         mas_rerun_requests),
    ]
    write_report(n, sample, concurrency, figures, counts, per_user, ratios, sizes, peak_kib)
    draw_chart(n, per_user)
    for name, seconds in figures.items():
        unit = "tokens" if "tokens" in name else "users"
        print(f"{name:32} {seconds:8.2f} s  {per_user[name] * 1000:9.1f} ms/{unit[:-1]}  ({counts[name]} {unit})")
    for name, value in ratios:
        print(f"{name}: {shown(value)}")
    print(f"binaries (static, stripped): {sizes}; peak memory {peak_kib / 1024:.1f} MiB (highest of the {n}-user x86_64 runs)")


def shown(value):
    """A ratio with two decimals; a count as it is."""
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def binary_sizes():
    """'x86_64 4.06 MB, aarch64 3.69 MB': the size of each shipped binary."""
    for arch, path in SHIPPED_BINARIES.items():
        if not os.path.exists(path):
            sys.exit(f"bench: the {arch} binary {path} is missing: run `tools/just build`")
    return ", ".join(f"{arch} {os.path.getsize(path) / 1e6:.2f} MB" for arch, path in SHIPPED_BINARIES.items())


def write_report(n, sample, concurrency, figures, counts, per_user, ratios, sizes, peak_kib):
    # The installed package's version: synapse.__version__ appends the commit
    # of any git checkout around the virtualenv, which is this repository's.
    synapse_version = subprocess.run(
        [os.path.join(VENV, "python"), "-c", "import importlib.metadata as m; print(m.version('matrix-synapse'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    lines = [
        "# Benchmarks",
        "",
        f"Written by `just bench {n}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {machine()}.",
        f"One real Synapse {synapse_version} (SQLite, default bcrypt rounds, default rate limits), started for the run;",
        f"module concurrency {concurrency}; the baseline loop runs on a sample of {sample} users.",
        "The \"5 attributes\" rows declare for every user `locked`, `shadow_banned`, a `ratelimit` override,",
        "one SSO identity (`external_ids`) and one public room (`rooms`); Synapse's user list shows neither",
        "the override nor the identities, so those users are read one by one, concurrently; the room's members once.",
        "The \"MAS contract server\" rows run the module against `tools/servers/mas.py`, the Python stand-in for",
        "MAS that the tests use (it checks every request against MAS 1.22's OpenAPI file), with users that declare",
        "a password (created with it, not compared: checking it takes a login, which MAS rate-limits), an admin flag",
        "and an e-mail address. They show how many requests a re-run sends (MAS is read in pages), not how fast MAS is.",
        "The \"synapse_database\" row repeats that re-run with `synapse_database` (Synapse's homeserver.db, read only),",
        "which confirms the override and the identities for all users at once (from 20 users on, when the list is read).",
        f"The \"registration tokens\" row re-runs `matrix_registration_token` on {TOKENS} declared tokens (each with a",
        "limit and an expiry, made by a first run): its \"users\" are tokens; Synapse's token list is read once.",
        "Absolute times depend on the machine: compare the ratios, which come from the same run.",
        "",
        "| approach | users | total (s) | per user (ms) |",
        "|---|---:|---:|---:|",
    ]
    for name in figures:
        lines.append(f"| {name} | {counts[name]} | {figures[name]:.2f} | {per_user[name] * 1000:.1f} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {name} | {shown(value)} |" for name, value in ratios]
    lines += [
        "",
        f"Module binaries (static, stripped): {sizes}; peak memory {peak_kib / 1024:.1f} MiB (the highest of the x86_64 binary's {n}-user runs).",
        "",
        "![time per user for each approach](benchmarks.png)",
        "",
    ]
    kept_scale = read_report().partition(SCALE_HEADING)[1:]
    with open(REPORT, "w") as f:
        f.write("\n".join(lines) + ("\n" + "".join(kept_scale) if kept_scale[0] else ""))


# docs/benchmarks.md: what `just bench N` writes, then the section `just bench
# --scale` writes (tools/bench/scale.py); each keeps the other's.
REPORT = os.path.join(ROOT, "docs", "benchmarks.md")
SCALE_HEADING = "## At scale"


def read_report():
    try:
        with open(REPORT) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def write_scale_section(section):
    """Replaces the scale section of docs/benchmarks.md with `section` (which starts with SCALE_HEADING)."""
    kept = read_report().partition(SCALE_HEADING)[0].rstrip("\n")
    with open(REPORT, "w") as f:
        f.write((kept + "\n\n" if kept else "") + section)


def draw_chart(n, per_user):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_user)
    values = [per_user[name] * 1000 for name in names]
    colours = [
        "#888888" if name.startswith("server") else "#cc4444" if name.startswith("baseline") else "#66aa66" if name.startswith("MAS") else "#3366aa"
        for name in names
    ]
    figure, axes = plt.subplots(figsize=(9, 4.5))
    axes.barh(names, values, color=colours)
    axes.set_xscale("log")
    axes.set_xlabel("milliseconds per user (log scale)")
    axes.set_title(f"matrix_user vs server limit vs one-task-per-user loop ({n} users)\ngreen: against the MAS contract server, a Python stand-in for MAS")
    axes.invert_yaxis()
    for y, value in enumerate(values):
        axes.text(value, y, f" {value:.1f}", va="center")
    figure.tight_layout()
    figure.savefig(os.path.join(ROOT, "docs", "benchmarks.png"), dpi=100)


if __name__ == "__main__":
    main()
