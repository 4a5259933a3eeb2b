"""Upload throughput and peak RSS of the gdrive:// remote, on loopback against the fake Drive.

    python bench/bench_gdrive.py                 # 1 GB, 8 MiB chunks
    python bench/bench_gdrive.py --size-mb 256   # quicker

In one run, each in a fresh process so RSS is its own: a plain resumable upload of the
same bytes with google-api-python-client alone (MediaFileUpload + next_chunk), and
GDriveRemote.put_file (which also hashes md5 + sha256 and checks Drive's md5). The fake
server runs in a third process and keeps only a count and an md5 of what it receives.
Prints MB/s for both, the ratio (target >= 0.8), and the uploader's peak RSS at the
full size and at an eighth of it (target < 150 MB, flat in file size).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import write_random

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def _serve() -> None:
    sys.path.insert(0, str(REPO / "tests" / "gdrive"))
    from fake_drive import FakeDrive

    drive = FakeDrive(keep_content=False)
    drive.quota_limit = None
    drive.add_refresh_token("1//bench")
    with drive:
        print(json.dumps({"url": drive.url, "token_uri": drive.token_uri}), flush=True)
        sys.stdin.read()  # until the parent closes our stdin


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _upload_syncd(url: str, creds: str, src: str, chunk: int) -> dict:
    from syncd.remotes.gdrive import GDriveRemote

    r = GDriveRemote("gdrive://bench", credentials=creds, root_url=url, chunk_bytes=chunk)
    r.write_bytes("warm", b"x")  # folders, token and connection: not part of the timing
    rss0 = _peak_rss_mb()
    t0 = time.perf_counter()
    d = r.put_file(Path(src), f"run/{time.time_ns()}.bin")
    dt = time.perf_counter() - t0
    r.close()
    return {"seconds": dt, "bytes": d.size, "rss_before_mb": rss0, "peak_rss_mb": _peak_rss_mb()}


def _upload_plain(url: str, creds: str, src: str, chunk: int) -> dict:
    from syncd.remotes.gdrive_auth import ensure_oauth2client_importable

    ensure_oauth2client_importable()  # environment repair only (see its docstring)
    import httplib2
    from googleapiclient.discovery import build_from_document
    from googleapiclient.http import MediaFileUpload
    from oauth2client.client import OAuth2Credentials

    from syncd.remotes.gdrive import discovery_document

    info = json.loads(Path(creds).read_text())
    c = OAuth2Credentials(None, info["client_id"], info["client_secret"], info["refresh_token"],
                          None, info["token_uri"], "bench")
    http = httplib2.Http(timeout=60)
    http.redirect_codes = http.redirect_codes - {308}
    http = c.authorize(http)
    service = build_from_document(discovery_document(url), http=http)
    service.about().get().execute()  # token and connection: not part of the timing
    rss0 = _peak_rss_mb()
    t0 = time.perf_counter()
    media = MediaFileUpload(src, mimetype="application/octet-stream", chunksize=chunk, resumable=True)
    req = service.files().insert(body={"title": "plain.bin"}, media_body=media)
    resp = None
    while resp is None:
        _, resp = req.next_chunk()
    dt = time.perf_counter() - t0
    media.stream().close()
    return {"seconds": dt, "bytes": int(resp["fileSize"]), "rss_before_mb": rss0, "peak_rss_mb": _peak_rss_mb()}


def _child(kind: str, url: str, creds: str, src: str, chunk: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, __file__, "--child", kind, url, creds, src, str(chunk)],
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the {kind} uploader failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--chunk-mb", type=float, default=8.0)
    ap.add_argument("--repeat", type=int, default=2, help="best of N for each uploader")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return _serve()
    if args.child:
        kind, url, creds, src, chunk = args.child
        fn = _upload_syncd if kind == "syncd" else _upload_plain
        print(json.dumps(fn(url, creds, src, int(chunk))))
        return

    chunk = int(args.chunk_mb * MIB)
    size = args.size_mb * MIB
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        info = json.loads(server.stdout.readline())
        with tempfile.TemporaryDirectory() as tmp:
            creds = Path(tmp) / "creds.json"
            creds.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                                         "refresh_token": "1//bench", "token_uri": info["token_uri"]}))
            os.chmod(creds, 0o600)
            big, small = Path(tmp) / "big.bin", Path(tmp) / "small.bin"
            write_random(big, size)
            write_random(small, max(chunk, size // 8))
            runs: dict[str, list[dict]] = {"plain": [], "syncd": []}
            for _ in range(args.repeat):  # interleaved, so drift in machine load hits both
                for kind in ("plain", "syncd"):
                    runs[kind].append(_child(kind, info["url"], str(creds), str(big), chunk))
            small_run = _child("syncd", info["url"], str(creds), str(small), chunk)
    finally:
        server.stdin.close()
        server.wait(30)

    def best(kind: str) -> dict:
        return min(runs[kind], key=lambda r: r["seconds"])

    plain, ours = best("plain"), best("syncd")
    mbps = {k: r["bytes"] / MIB / r["seconds"] for k, r in (("plain", plain), ("syncd", ours))}
    print(f"file {args.size_mb} MiB, chunk {args.chunk_mb:g} MiB, best of {args.repeat}, loopback fake Drive")
    print(f"  google-api-python-client alone : {mbps['plain']:8.1f} MiB/s  peak RSS {plain['peak_rss_mb']:.0f} MB")
    print(f"  syncd GDriveRemote.put_file    : {mbps['syncd']:8.1f} MiB/s  peak RSS {ours['peak_rss_mb']:.0f} MB"
          f"  (before upload {ours['rss_before_mb']:.0f} MB)")
    print(f"  ratio syncd/plain              : {mbps['syncd'] / mbps['plain']:.2f}x   (target >= 0.80)")
    print(f"  syncd peak RSS at {max(chunk, size // 8) // MIB} MiB file   : "
          f"{small_run['peak_rss_mb']:.0f} MB   vs {ours['peak_rss_mb']:.0f} MB at {args.size_mb} MiB (target < 150, flat)")


if __name__ == "__main__":
    main()
