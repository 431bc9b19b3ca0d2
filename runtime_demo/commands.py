"""Subcommands contributed by this package (see tensorgpt/cli.py): run, eval, bench.

Only argparse at import time: onnxruntime and numpy are imported inside each `run`, so
`tensorgpt --help` stays fast and a broken runtime install cannot break other commands.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tensorgpt.common.command import Command
from tensorgpt.common.integrity import SKIP_OPTION

# Shared with compare and sweep (tensorgpt/compare_commands.py); the rule is machine.py's.
THREADS_HELP = (
    "onnxruntime intra-op threads (default: one per core that other work leaves free, i.e. "
    "cores minus the 1-minute load average, at least 1, printed when chosen; "
    "0: onnxruntime's own default, one per core)"
)

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from .generate import Generation
    from .sampling import SamplingConfig
    from .session import ExportedModel


def _add_out_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder written by `tensorgpt export`")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=THREADS_HELP,
    )
    add_integrity_option(parser)


def add_integrity_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        SKIP_OPTION,
        dest="skip_integrity_check",
        action="store_true",
        help="load even when a file does not match the size and sha256 the manifest records "
        "(a damaged copy runs, but its output is wrong; `tensorgpt verify` says which file)",
    )


def _add_json(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as one JSON object")


# ---------------------------------------------------------------------------- run


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    _add_out_dir(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="text to continue")
    source.add_argument(
        "--prompts", metavar="FILE", help="one prompt per line, run as one left-padded batch"
    )
    source.add_argument(
        "--prompt-ids",
        metavar="IDS",
        help="token ids instead of text, comma or space separated (bypasses the tokenizer)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=64, help="default: 64")
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sample at this temperature (default: greedy; 1.0 if only --top-k/--top-p given)",
    )
    parser.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest")
    parser.add_argument(
        "--top-p", type=float, default=None, help="sample from the smallest set with this mass"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    _add_json(parser, "token ids and text per prompt")


def _read_prompts(path: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"--prompts {path} is not UTF-8 text (invalid byte at offset {exc.start})"
        ) from None
    while lines and not lines[-1].strip():
        lines.pop()  # a trailing blank line is a file-ending habit, not a prompt
    if not lines:
        raise ValueError(f"--prompts {path} has no prompts")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise ValueError(f"--prompts {path}: line {number} is empty")
    return lines


def _parse_ids(text: str) -> list[int]:
    parts = text.replace(",", " ").split()
    if not parts:
        raise ValueError("--prompt-ids is empty")
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--prompt-ids must be integers, got {text!r}") from None


def _sampling_config(args: argparse.Namespace) -> SamplingConfig:
    from .sampling import SamplingConfig

    wants_sampling = any(v is not None for v in (args.temperature, args.top_k, args.top_p))
    temperature = args.temperature if args.temperature is not None else 1.0
    return SamplingConfig(
        temperature=temperature if wants_sampling else 0.0,
        top_k=args.top_k or 0,
        top_p=1.0 if args.top_p is None else args.top_p,
        seed=args.seed,
    )


def _prompt_texts(args: argparse.Namespace) -> list[str | None]:
    """The prompts as text (None for --prompt-ids, which skips the tokenizer)."""
    if args.prompt_ids is not None:
        return [None]
    if args.prompt is not None:
        if not args.prompt.strip():
            raise ValueError("--prompt is empty")
        return [args.prompt]
    return list(_read_prompts(args.prompts))


def _run(args: argparse.Namespace) -> int:
    from .generate import generate_batch
    from .known_quality import broken_warning
    from .machine import resolve_threads, threads_note
    from .session import ExportedModel
    from .tokenizer import encode, load_tokenizer

    texts = _prompt_texts(args)
    explicit_ids = _parse_ids(args.prompt_ids) if args.prompt_ids is not None else None
    sampling = _sampling_config(args)
    model = ExportedModel(
        args.out_dir,
        threads=resolve_threads(args.threads),
        check_integrity=not args.skip_integrity_check,
    )
    tokenizer = load_tokenizer(model.folder)
    if explicit_ids is not None:
        prompt_ids = [explicit_ids]
    else:
        prompt_ids = [encode(tokenizer, text) for text in texts if text is not None]
    # Said once the input is known to be good (a bad option is one error line, nothing else).
    notes = [threads_note(args.threads), broken_warning(model.folder, model.vocab_size)]
    notes = [n for n in notes if n]

    if len(prompt_ids) == 1 and not args.json:
        return _stream(model, tokenizer, prompt_ids[0], args.max_new_tokens, sampling, notes)
    start = time.perf_counter()
    results = generate_batch(model, prompt_ids, args.max_new_tokens, sampling)
    elapsed = time.perf_counter() - start
    for note in notes:
        print(note, file=sys.stderr)
    if args.json:
        print(json.dumps(_run_report(model, tokenizer, texts, results, args, sampling)))
        return 0
    from .tokenizer import decode

    for number, (text, result) in enumerate(zip(texts, results), start=1):
        print(f"[{number}] {text}")
        print(decode(tokenizer, result.ids))
        print(f"[{_stop_words(model, result.finish_reason, args.max_new_tokens)}]", file=sys.stderr)
    _print_stats(sum(len(r.ids) for r in results), elapsed, f"{len(results)} prompts")
    return 0


def _stop_words(model: ExportedModel, reason: str, max_new_tokens: int) -> str:
    from .generate import stop_words

    return stop_words(reason, max_new_tokens, model.max_positions)


def _stream(
    model: ExportedModel,
    tokenizer: Tokenizer,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampling: SamplingConfig,
    notes: list[str],
) -> int:
    """Print the prompt, then each piece of text as soon as its token is decoded."""
    from .generate import finish_reason, generate
    from .tokenizer import StreamDecoder, decode

    start = time.perf_counter()
    stream = StreamDecoder(tokenizer, prompt_ids)
    tokens = generate(model, prompt_ids, max_new_tokens, sampling)
    first = next(tokens)  # checks the options before anything is printed
    for note in notes:
        print(note, file=sys.stderr, flush=True)
    # The prompt first, so the continuation reads as what the model added to it.
    print(decode(tokenizer, prompt_ids), end="", flush=True)
    ids: list[int] = []
    for token in itertools.chain([first], tokens):
        ids.append(token)
        print(stream.push(token), end="", flush=True)
    print(stream.flush(), flush=True)
    reason = finish_reason(ids, max_new_tokens, model.config.eos_token_ids)
    _print_stats(len(ids), time.perf_counter() - start, _stop_words(model, reason, max_new_tokens))
    return 0


def _run_report(
    model: ExportedModel,
    tokenizer: Tokenizer,
    texts: list[str | None],
    results: list[Generation],
    args: argparse.Namespace,
    sampling: SamplingConfig,
) -> dict:
    """The --json output: one entry per prompt, in input order (read by the ARM check)."""
    from .tokenizer import decode

    return {
        "model": str(model.folder),
        "max_new_tokens": args.max_new_tokens,
        "sampling": vars(sampling),
        "results": [
            {
                "prompt": text,
                "prompt_ids": result.prompt_ids,
                "ids": result.ids,
                "text": decode(tokenizer, result.ids),
                "finish_reason": result.finish_reason,
            }
            for text, result in zip(texts, results)
        ],
    }


def _print_stats(tokens: int, seconds: float, note: str) -> None:
    rate = tokens / seconds if seconds > 0 else float("inf")
    print(f"[{tokens} tokens in {seconds:.2f} s, {rate:.1f} tokens/s, {note}]", file=sys.stderr)


# ---------------------------------------------------------------------------- eval


def _add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    _add_out_dir(parser)
    parser.add_argument(
        "--text",
        metavar="FILE",
        required=True,
        help="UTF-8 text to score; read and tokenized as a stream, so any size fits in memory",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        help="tokens per window (default: 512, or the model's context if smaller)",
    )
    parser.add_argument(
        "--stride",
        type=int,
        default=None,
        help="start a window every STRIDE tokens; only its new tokens are scored "
        "(default: the window, no overlap)",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="score only the text's first N tokens (reading stops there)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress on stderr (default: a bar on a terminal, a line every 10%% elsewhere)",
    )
    _add_json(parser, "perplexity and token counts")


def _eval(args: argparse.Namespace) -> int:
    from .machine import resolve_threads, threads_note
    from .perplexity import text_perplexity
    from .session import ExportedModel
    from .text_stream import text_bytes
    from .tokenizer import load_tokenizer

    if text_bytes(args.text) == 0:
        raise ValueError(f"--text {args.text} is empty")
    model = ExportedModel(
        args.out_dir,
        threads=resolve_threads(args.threads),
        check_integrity=not args.skip_integrity_check,
    )
    tokenizer = load_tokenizer(model.folder)
    # No BOS: the windows score the text itself, as in HF's strided-perplexity guide. The text
    # is read, tokenized and scored as a stream: memory stays bounded for any file size.
    result = text_perplexity(
        model,
        tokenizer,
        args.text,
        args.window,
        args.stride,
        args.max_tokens,
        progress=not args.no_progress,
    )
    if note := threads_note(args.threads):
        print(note, file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"perplexity {result['perplexity']:.4f} over {result['scored']} scored tokens "
            f"({result['tokens']} tokens, {result['windows']} windows of {result['window']}, "
            f"stride {result['stride']})"
        )
    return 0


# ---------------------------------------------------------------------------- bench


def _add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    _add_out_dir(parser)
    parser.add_argument(
        "--prompt-tokens", type=int, default=128, help="random prompt length (default: 128)"
    )
    parser.add_argument(
        "--decode-tokens", type=int, default=64, help="timed decode steps per run (default: 64)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs after one warm-up (default: 3)"
    )
    parser.add_argument(
        "--whole-load",
        action="store_true",
        help="load model.onnx even where the export wrote decode.onnx + body.onnx "
        "(to measure what the split load saves)",
    )
    _add_json(parser, "the measurements")


def _bench(args: argparse.Namespace) -> int:
    from .bench import bench
    from .machine import machine, resolve_threads, threads_note

    result = bench(
        args.out_dir,
        threads=resolve_threads(args.threads),
        prompt_tokens=args.prompt_tokens,
        decode_tokens=args.decode_tokens,
        repeats=args.repeats,
        split=not args.whole_load,
        check_integrity=not args.skip_integrity_check,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    from .machine import threads_label

    for key, value in result.items():
        print(f"{key:20s} {threads_label(value) if key == 'threads' else value}")
    if note := threads_note(args.threads):
        print(note)
    print(machine().describe())
    return 0


COMMANDS = [
    Command(
        name="run",
        help="generate text from an exported folder with onnxruntime (KV cache, streaming)",
        add_arguments=_add_run_arguments,
        run=_run,
    ),
    Command(
        name="eval",
        help="perplexity of a text file with strided sliding windows (streamed: any file size)",
        add_arguments=_add_eval_arguments,
        run=_eval,
    ),
    Command(
        name="bench",
        help="session load time, time to first token, decode latency, peak memory",
        add_arguments=_add_bench_arguments,
        run=_bench,
    ),
]
