"""Profile a server's API process under streaming load with py-spy; its CPU per request.

    python -m loadtests.profile_gateway [--server huatuo|vllm] [--concurrency 32]
        [--num-requests 400] [--ours-source DIR] [--record NAME]

Starts the server on the tiny demo model (or --model-dir), sends warm-up requests, then samples
the API process (engine core excluded) with `py-spy record --nonblocking --gil` (the thread
holding the GIL: Python at work, not threads waiting) while a closed loop of streaming requests
(ignore_eos, --max-tokens tokens each) runs. Prints the API process's CPU milliseconds per
request, the functions holding the largest shares of samples (inclusive of callees) and the
lines executing most (self), with `--record` as docs/results/NAME.json for `huatuo figures`.
py-spy needs ptrace rights on the server (root, or CAP_SYS_PTRACE).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadtests.client import SamplingOptions
from loadtests.compare import (
    OURS,
    SERVED_NAME,
    VLLM,
    EngineSettings,
    ours_command,
    vllm_command,
    write_chat_template,
)
from loadtests.report import summarize
from loadtests.runner import LoadSpec, Target, run_load, run_sweep_async
from loadtests.server_process import ServerProcess, free_port
from loadtests.workloads import single_turn

# Frames every sample of the event loop's thread shares: not informative.
_ROOT_FRAMES = re.compile(r"runpy|__main__|huatuo/cli\.py|huatuo/serve\.py|server/runner\.py|"
                          r"uvloop/__init__|asyncio/runners|api_server\.py|uvloop|"
                          r"threading\.py|vllm/entrypoints/cli|vllm/entrypoints/launchers|vllm/utils/")


def top_functions(raw: str, count: int = 20
                  ) -> tuple[list[tuple[str, float]], int, list[tuple[str, float]]]:
    """(function (file), share of samples) by inclusive share, from py-spy's raw output
    (`frame;frame;... N` per line), the number of samples, and the leaf lines (function, file
    and line) by self share: what the process was executing."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        total += samples
        frames = stack.split(";")
        own[_frame_name(frames[-1], keep_line=True)] += samples
        seen = set()
        for frame in frames:
            name = _frame_name(frame)
            if name not in seen:
                seen.add(name)
                inclusive[name] += samples
    if not total:
        return [], 0, []
    ranked = [(name, n / total) for name, n in inclusive.most_common()
              if not _ROOT_FRAMES.search(name)]
    leaves = [(name, n / total) for name, n in own.most_common(count)]
    return ranked[:count], total, leaves


def _frame_name(frame: str, keep_line: bool = False) -> str:
    """'send (uvicorn/protocols/http/httptools_impl.py:544)' -> 'send (uvicorn/.../x.py)'
    (with `keep_line`, '... x.py:544)')."""
    match = re.match(r"(?P<func>.*?) \((?P<file>[^:)]*)(?P<line>:\d+)?\)$", frame.strip())
    if not match:
        return frame.strip()
    path = re.sub(r".*/(site-packages|python3\.\d+)/", "", match["file"])
    path = re.sub(r"^.*/(server|loadtests|huatuo)/", r"\1/", path)
    line = (match["line"] or "") if keep_line else ""
    return f"{match['func']} ({path}{line})"


def profile(server_name: str, settings: EngineSettings, concurrency: int, num: int,
            max_tokens: int, ours_source: Path | None, work: Path) -> dict:
    port = free_port()
    argv = (ours_command(settings, port) if server_name == OURS
            else vllm_command(settings, port, write_chat_template(work)))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_space)}
    if ours_source is not None and server_name == OURS:
        env["PYTHONPATH"] = str(ours_source)
    server = ServerProcess(argv, work / f"{server_name}.log", port=port, env=env,
                           name=server_name,
                           cwd=ours_source if server_name == OURS else None)
    server.start_ready()
    try:
        requests = single_turn(num, max_tokens=max_tokens)
        target = Target(server.base_url, SERVED_NAME, None, True, 600.0,
                        SamplingOptions(extra_body={"ignore_eos": True}))
        warm = LoadSpec("closed", concurrency, None, 1.0, concurrency)
        run_load(run_sweep_async(target, requests, [warm], show_progress=False))
        raw_path = work / "profile.raw"
        # --gil: only the thread holding the GIL, i.e. Python at work (a thread waiting on a
        # queue or a lock would otherwise count as busy with --nonblocking).
        spy = subprocess.Popen([_py_spy(), "record", "--nonblocking", "--gil", "--rate", "250",
                                "--pid",
                                str(server.process.pid), "--format", "raw", "--output",
                                str(raw_path)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
        time.sleep(2)  # py-spy attaches
        api0, _ = server.cpu()
        (run,) = run_load(run_sweep_async(
            target, requests, [LoadSpec("closed", concurrency, None, 1.0, num)],
            show_progress=False))
        api1, _ = server.cpu()
        spy.send_signal(signal.SIGINT)
        _, err = spy.communicate(timeout=120)
        if not raw_path.exists():
            raise SystemExit(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
        summary = summarize(run)
        top, samples, leaves = top_functions(raw_path.read_text(errors="replace"))
        return {"server": server_name, "concurrency": concurrency,
                "completed": summary["completed"], "errors": summary["errors"],
                "api_cpu_ms_per_request": 1000 * (api1 - api0) / max(summary["completed"], 1),
                "output_token_throughput": summary["output_token_throughput"],
                "samples": samples, "top": top, "self": leaves, "load_average": os.getloadavg()[0]}
    finally:
        server.stop()


def _py_spy() -> str:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else (shutil.which("py-spy") or "py-spy")


def markdown(result: dict) -> str:
    lines = [f"{result['server']}, c={result['concurrency']} streaming: "
             f"**{result['api_cpu_ms_per_request']:.2f} ms API CPU per request**, "
             f"{result['completed']} requests, {result['samples']} samples.", "",
             "| share of API-process samples (inclusive) | function |", "|---:|---|"]
    lines += [f"| {share:.1%} | `{name}` |" for name, share in result["top"]]
    if result.get("self"):
        lines += ["", "| share of samples executing this line (self) | line |", "|---:|---|"]
        lines += [f"| {share:.1%} | `{name}` |" for name, share in result["self"][:12]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=(OURS, VLLM), default=OURS)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--num-requests", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--ours-source", type=Path, default=None,
                        help="Run `huatuo serve` from this source tree (before/after).")
    parser.add_argument("--record", default=None, metavar="NAME",
                        help="Record as docs/results/NAME.json.")
    parser.add_argument("--enforce-eager", action="store_true",
                        help="No torch.compile: a start in seconds on a busy machine.")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="huatuo-profile-"))
    model_dir = args.model_dir
    if model_dir is None:
        from huatuogpt2.demo_checkpoint import build_tiny_llama

        model_dir = build_tiny_llama(work / "tiny-huatuo")
    settings = EngineSettings(model_dir=model_dir, max_model_len=1024, dtype="float32",
                              enforce_eager=args.enforce_eager)
    print(f"expected duration: 1-4 min (server start, then {args.num_requests} requests)",
          file=sys.stderr, flush=True)
    result = profile(args.server, settings, args.concurrency, args.num_requests,
                     args.max_tokens, args.ours_source, work)
    text = markdown(result)
    print(text)
    if args.record:
        from figures.record import write_result

        write_result(args.record, text, data=result,
                     inline={"cpu_ms": f"{result['api_cpu_ms_per_request']:.2f}"})
        print(f"recorded docs/results/{args.record}.json; run `huatuo figures`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
