"""A process SIGKILLed mid-file: the next one resumes Drive's session, not byte 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from .helpers_gdrive import CHUNK, blob

REPO = Path(__file__).resolve().parents[2]

UPLOADER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from syncd.remotes.gdrive import GDriveRemote

    root_url, creds, state, src = sys.argv[1:5]
    r = GDriveRemote("gdrive://backups", credentials=creds, root_url=root_url,
                     chunk_bytes=256 * 1024, state_dir=Path(state), backoff_base_s=0.01)
    d = r.put_file(Path(src), "run/checkpoint-7.partial/model.safetensors")
    r.close()
    print(d.md5)
""")


def _run(args, **kw):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-c", UPLOADER, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_sigkill_mid_file_resumes_from_the_acknowledged_byte(drive, creds, tmp_path):
    data = blob(10 * CHUNK + 12345, seed=7)
    src = tmp_path / "model.safetensors"
    src.write_bytes(data)
    state = tmp_path / "state"
    args = [drive.url, creds, state, src]

    drive.hold(after_bytes=4 * CHUNK)  # park the 5th chunk so we kill a process that is mid-file
    proc = _run(args)
    try:
        assert drive.held.wait(60), proc.stderr.read() if proc.poll() is not None else "never reached"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        drive.release()
    assert proc.returncode == -signal.SIGKILL
    sessions = list(state.glob("*.json"))
    assert len(sessions) == 1
    saved = json.loads(sessions[0].read_text())
    assert saved["dest"] == "run/checkpoint-7.partial/model.safetensors" and "upload_id=" in saved["uri"]
    acknowledged = 4 * CHUNK
    received = drive.bytes_received
    offsets = len(drive.chunk_offsets)
    assert drive.find("backups/run/checkpoint-7.partial/model.safetensors") is None

    proc = _run(args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    import hashlib

    assert out.decode().strip() == hashlib.md5(data).hexdigest()  # the digest covers the resumed bytes too
    assert drive.find("backups/run/checkpoint-7.partial/model.safetensors").data == data
    # the restarted process sent only what Drive did not have, starting at its offset
    assert drive.bytes_received - received == len(data) - acknowledged
    assert drive.chunk_offsets[offsets] == acknowledged
    assert drive.count["upload_start"] == 1  # same session, no second one
    assert not list(state.glob("*.json"))
