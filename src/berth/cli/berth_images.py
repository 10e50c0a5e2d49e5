"""Image commands: pull, push, images, rmi, tag, save, load, import, history, login,
image inspect, image prune."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from berth.cli.berth_client import APIError, Client, iter_json, registry_auth
from berth.cli.berth_common import UsageError, is_tty, parse_filters, parser, short
from berth.cli.berth_format import ago, human_size, print_deleted_images, render_rows
from berth.cli.berth_progress import display


def full_name(reference: str) -> str:
    """``busybox`` -> ``docker.io/library/busybox:latest`` (what docker prints after a pull)."""
    from berth.image.reference import parse_reference

    return str(parse_reference(reference))


def pull_image(api: Client, reference: str, *, platform: str = "", quiet: bool = False,
               out: Any = None) -> None:
    """POST /images/create and show its progress (on ``out``, stdout by default)."""
    from berth.image.reference import parse_reference

    try:
        ref = parse_reference(reference)
    except Exception as e:  # noqa: BLE001 - berth.errors.InvalidArgument
        raise UsageError(f"invalid reference format: {e}") from None
    query: dict[str, Any] = {"fromImage": ref.familiar_name() if ref.domain == "docker.io" else ref.name,
                             "tag": ref.digest or ref.tag or "latest"}
    if platform:
        query["platform"] = platform
    resp = api.call("POST", "/images/create", query=query, headers={"X-Registry-Auth": registry_auth(reference)})
    stream = out or sys.stdout
    if quiet:
        for message in iter_json(resp):
            if message.get("error") or message.get("errorDetail"):
                display([message], stream, False)
        return
    display(iter_json(resp), stream)


def pull(api: Client, argv: list[str]) -> int:
    p = parser("pull", "[OPTIONS] NAME[:TAG|@DIGEST]", "Download an image from a registry")
    p.add_argument("-a", "--all-tags", action="store_true", help="not supported")
    p.add_argument("--platform", default=os.environ.get("DOCKER_DEFAULT_PLATFORM", ""))
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress verbose output")
    p.add_argument("name")
    args = p.parse_args(argv)
    if args.all_tags:
        raise UsageError("--all-tags is not supported")
    if ":" not in args.name.rsplit("/", 1)[-1] and "@" not in args.name and not args.quiet:
        print("Using default tag: latest")
    pull_image(api, args.name, platform=args.platform, quiet=args.quiet)
    print(full_name(args.name))
    return 0


def push(api: Client, argv: list[str]) -> int:
    p = parser("push", "[OPTIONS] NAME[:TAG]", "Upload an image to a registry")
    p.add_argument("-a", "--all-tags", action="store_true", help="Push all tags of an image to the repository")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress verbose output")
    p.add_argument("name")
    args = p.parse_args(argv)
    from berth.image.reference import parse_reference

    ref = parse_reference(args.name, default_tag=None)
    if not ref.tag and not args.all_tags:
        print("Using default tag: latest")
    tag = "" if args.all_tags else (ref.tag or "latest")
    name = ref.familiar_name() if ref.domain == "docker.io" else ref.name
    resp = api.call("POST", f"/images/{name}/push", query={"tag": tag},
                    headers={"X-Registry-Auth": registry_auth(args.name)})
    if args.quiet:
        display((m for m in iter_json(resp) if m.get("error") or m.get("errorDetail")), sys.stdout, False)
        print(args.name)
    else:
        display(iter_json(resp), sys.stdout)
    return 0


IMAGE_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST", "ID": "IMAGE ID",
                 "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS"}


def images(api: Client, argv: list[str]) -> int:
    p = parser("images", "[OPTIONS] [REPOSITORY[:TAG]]", "List images")
    p.add_argument("-a", "--all", action="store_true", help="Show all images")
    p.add_argument("-q", "--quiet", action="store_true", help="Only show image IDs")
    p.add_argument("--digests", action="store_true", help="Show digests")
    p.add_argument("-f", "--filter", action="append", default=[], help="Filter output based on conditions provided")
    p.add_argument("--format", default="", help="Format output using a custom template")
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("reference", nargs="?")
    args = p.parse_args(argv)
    filters = parse_filters(args.filter) or {}
    if args.reference:
        filters.setdefault("reference", []).append(args.reference)
    summaries = api.get("/images/json", all=args.all, filters=filters or None) or []
    rows = []
    for s in summaries:
        image_id = s["Id"] if args.no_trunc else short(s["Id"])
        tags = [t for t in s.get("RepoTags") or [] if t != "<none>:<none>"]
        digests = [d for d in s.get("RepoDigests") or [] if d != "<none>@<none>"]
        pairs = [(t.rsplit(":", 1)[0], t.rsplit(":", 1)[1]) for t in tags] or [
            (d.split("@")[0], "<none>") for d in digests[:1]] or [("<none>", "<none>")]
        for repo, tag in pairs:
            digest = next((d.split("@", 1)[1] for d in digests if d.split("@")[0] == repo), "<none>")
            rows.append({"Repository": repo, "Tag": tag, "Digest": digest, "ID": image_id,
                         "CreatedSince": ago(s.get("Created") or 0), "CreatedAt": str(s.get("Created")),
                         "Size": human_size(s.get("Size") or 0), "Containers": str(s.get("Containers", "N/A"))})
    if args.quiet:
        seen: list[str] = []
        for row in rows:
            if row["ID"] not in seen:
                seen.append(row["ID"])
        sys.stdout.write("".join(i + "\n" for i in seen))
        return 0
    fmt = args.format
    if not fmt:
        cols = "{{.Repository}}\t{{.Tag}}\t" + ("{{.Digest}}\t" if args.digests else "") + \
               "{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
        fmt = "table " + cols
    sys.stdout.write(render_rows(fmt, rows, IMAGE_HEADERS))
    return 0


def rmi(api: Client, argv: list[str]) -> int:
    p = parser("rmi", "[OPTIONS] IMAGE [IMAGE...]", "Remove one or more images")
    p.add_argument("-f", "--force", action="store_true", help="Force removal of the image")
    p.add_argument("--no-prune", action="store_true", help="Do not delete untagged parents")
    p.add_argument("images", nargs="+")
    args = p.parse_args(argv)
    failed = False
    for name in args.images:
        try:
            report = api.delete(f"/images/{name}", force=args.force, noprune=args.no_prune) or []
        except APIError as e:
            sys.stderr.write(f"Error response from daemon: {e.message}\n")
            failed = True
            continue
        for item in report:
            for key, value in item.items():
                print(f"{key}: {value}")
    return 1 if failed else 0


def tag(api: Client, argv: list[str]) -> int:
    p = parser("tag", "SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE")
    p.add_argument("source")
    p.add_argument("target")
    args = p.parse_args(argv)
    repo, tag_ = args.target, ""
    last = repo.rsplit("/", 1)[-1]
    if "@" in repo:
        raise UsageError("refusing to create a tag with a digest reference")
    if ":" in last:
        repo, tag_ = repo.rsplit(":", 1)
    api.post(f"/images/{args.source}/tag", repo=repo, tag=tag_ or "latest")
    return 0


def save(api: Client, argv: list[str]) -> int:
    p = parser("save", "[OPTIONS] IMAGE [IMAGE...]", "Save one or more images to a tar archive (streamed to STDOUT by default)")
    p.add_argument("-o", "--output", default="", help="Write to a file, instead of STDOUT")
    p.add_argument("images", nargs="+")
    args = p.parse_args(argv)
    if not args.output and is_tty(sys.stdout):
        raise UsageError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    resp = api.call("GET", "/images/get", query={"names": args.images})
    if args.output:
        tmp = args.output + ".berth-tmp"
        try:
            with open(tmp, "wb") as f:
                _copy(resp, f)
            os.replace(tmp, args.output)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    else:
        _copy(resp, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    return 0


def _copy(resp: Any, out: Any) -> None:
    while True:
        chunk = resp.read1(1 << 20) if hasattr(resp, "read1") else resp.read(1 << 20)
        if not chunk:
            break
        out.write(chunk)


def load(api: Client, argv: list[str]) -> int:
    p = parser("load", "[OPTIONS]", "Load an image from a tar archive or STDIN")
    p.add_argument("-i", "--input", default="", help="Read from tar archive file, instead of STDIN")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress the load output")
    args = p.parse_args(argv)
    if not args.input and is_tty(sys.stdin):
        raise UsageError("requested load from stdin, but stdin is empty")
    source = open(args.input, "rb") if args.input else sys.stdin.buffer
    try:
        resp = api.call("POST", "/images/load", query={"quiet": args.quiet}, body=_chunks(source),
                        headers={"Content-Type": "application/x-tar"})
        display(iter_json(resp), sys.stdout)
    finally:
        if args.input:
            source.close()
    return 0


def _chunks(source: Any) -> Any:
    while True:
        chunk = source.read(1 << 20)
        if not chunk:
            return
        yield chunk


def import_(api: Client, argv: list[str]) -> int:
    p = parser("import", "[OPTIONS] file|- [REPOSITORY[:TAG]]",
               "Import the contents from a tarball to create a filesystem image")
    p.add_argument("-c", "--change", action="append", default=[], help="Apply Dockerfile instruction to the created image")
    p.add_argument("-m", "--message", default="", help="Set commit message for imported image")
    p.add_argument("--platform", default="", help="Set platform if server is multi-platform capable")
    p.add_argument("file")
    p.add_argument("reference", nargs="?", default="")
    args = p.parse_args(argv)
    if "://" in args.file:
        raise UsageError("importing from a URL is not supported: download it and import the file")
    repo, tag_ = args.reference, ""
    if repo and ":" in repo.rsplit("/", 1)[-1]:
        repo, tag_ = repo.rsplit(":", 1)
    query = {"fromSrc": "-", "repo": repo or None, "tag": tag_ or None, "message": args.message or None,
             "changes": args.change or None, "platform": args.platform or None}
    source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    try:
        resp = api.call("POST", "/images/create", query=query, body=_chunks(source))
        for message in iter_json(resp):
            if message.get("error") or message.get("errorDetail"):
                display([message], sys.stdout, False)
            elif message.get("status"):
                print(message["status"])
    finally:
        if args.file != "-":
            source.close()
    return 0


def history(api: Client, argv: list[str]) -> int:
    p = parser("history", "[OPTIONS] IMAGE", "Show the history of an image")
    p.add_argument("-H", "--human", default="true", nargs="?", const="true", help="Print sizes and dates in human readable format")
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="Only show image IDs")
    p.add_argument("--format", default="")
    p.add_argument("image")
    args = p.parse_args(argv)
    entries = api.get(f"/images/{args.image}/history") or []
    if args.quiet:
        for e in entries:
            print(e["Id"] if args.no_trunc else (short(e["Id"]) if e["Id"].startswith("sha256:") else e["Id"]))
        return 0
    rows = []
    for e in entries:
        created_by = e.get("CreatedBy", "")
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        rows.append({"ID": e["Id"] if args.no_trunc or not e["Id"].startswith("sha256:") else short(e["Id"]),
                     "CreatedSince": ago(e.get("Created") or 0), "CreatedBy": created_by,
                     "Size": human_size(e.get("Size") or 0), "Comment": e.get("Comment", "")})
    headers = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedBy": "CREATED BY", "Size": "SIZE",
               "Comment": "COMMENT"}
    fmt = args.format or "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    sys.stdout.write(render_rows(fmt, rows, headers))
    return 0


def image_inspect(api: Client, argv: list[str]) -> int:
    from berth.cli.berth_containers import inspect

    return inspect(api, ["--type", "image", *argv])


def image_prune(api: Client, argv: list[str]) -> int:
    p = parser("image prune", "[OPTIONS]", "Remove unused images")
    p.add_argument("-a", "--all", action="store_true", help="Remove all unused images, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[])
    args = p.parse_args(argv)
    if not args.force and not confirm("WARNING! This will remove all " + ("images without at least one container "
                                      "associated to them." if args.all else "dangling images.")):
        return 0
    filters = parse_filters(args.filter) or {}
    filters["dangling"] = ["false" if args.all else "true"]
    result = api.post("/images/prune", filters=json.dumps(filters)) or {}
    print_deleted_images(result.get("ImagesDeleted") or [])
    print(f"Total reclaimed space: {human_size(result.get('SpaceReclaimed') or 0)}")
    return 0


def confirm(warning: str) -> bool:
    sys.stdout.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def login(api: Client, argv: list[str]) -> int:
    p = parser("login", "[OPTIONS] [SERVER]", "Log in to a registry")
    p.add_argument("-u", "--username", default="")
    p.add_argument("-p", "--password", default="")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("server", nargs="?", default="docker.io")
    args = p.parse_args(argv)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else args.password
    if not args.username:
        sys.stdout.write("Username: ")
        sys.stdout.flush()
        args.username = sys.stdin.readline().strip()
    if not password:
        import getpass

        password = getpass.getpass("Password: ")
    result = api.post("/auth", {"username": args.username, "password": password, "serveraddress": args.server})
    _store_credentials(args.server, args.username, password)
    print((result or {}).get("Status", "Login Succeeded"))
    return 0


def _store_credentials(server: str, username: str, password: str) -> None:
    """Into Docker's config.json (``auths``), as ``docker login`` does without a helper."""
    import base64

    from berth.image.auth import default_config_path

    path = default_config_path()
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        config = {}
    key = "https://index.docker.io/v1/" if server in ("docker.io", "index.docker.io") else server
    config.setdefault("auths", {})[key] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent="\t"))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


