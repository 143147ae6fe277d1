"""``fcn-scratch gradcheck``: every op's gradients against central differences, as a table."""

import argparse

from fcn_scratch.gradcheck_cases import cases, run_case


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--op", help="only cases of this op (e.g. conv2d)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random inputs")


def run(args) -> int:
    selected = [c for c in cases() if args.op is None or c.op == args.op]
    if not selected:
        ops = sorted({c.op for c in cases()})
        raise ValueError(f"no cases for --op {args.op!r}; the ops are {', '.join(ops)}")
    header = (
        f"| {'op':<17} | {'configuration':<58} | {'max abs err':>11} "
        f"| {'max rel err':>11} | result |"
    )
    print(header)
    print("|" + "|".join("-" * (len(col)) for col in header.split("|")[1:-1]) + "|")
    failures = 0
    for case in selected:
        result = run_case(case, args.seed)
        failures += not result.passed
        config = ", ".join(f"{k}={v}" for k, v in case.config.items())
        print(
            f"| {case.op:<17} | {config:<58} | {result.max_abs_err:11.2e} | "
            f"{result.max_rel_err:11.2e} | {'pass' if result.passed else 'FAIL':<6} |"
        )
    print(f"\n{len(selected) - failures} passed, {failures} failed")
    return 1 if failures else 0
