"""The front of a search against its confirmation by `vitnas retrain`: how much of the proxy's order holds.

    vitnas search --study fm24 --dataset fashion_mnist --data-dir ../shared/data --img-size 16 \\
        --train-subset 2000 --val-subset 1000
    vitnas retrain --study fm24 --front --epochs 27 --seeds 3 --train-subset 2000 --data-dir ../shared/data
    python -m benchmarks.confirmed --study fm24 --storage sqlite:///runs/vitnas.db

Prints, per confirmed design: its proxy accuracy, its confirmed mean, std and seeds, whether it was on the
proxy's front and whether it is on the front once confirmed values replace the proxy's (vitnas' own
``pareto_front``); then Kendall tau between the proxy's and the confirmed order, over the proxy front's
confirmed members and over every confirmed design, and the pairs the noise does not separate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def report(study_name: str, storage: str) -> str:
    from scipy.stats import kendalltau

    from nas.study import confirmations, load_study, not_separated, pareto_front

    study = load_study(storage, study_name)
    conf = confirmations(study)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    proxy_front = {t.number for t in pareto_front(study, confirmed=False)}
    confirmed_front = {t.number for t in pareto_front(study)}
    rows = sorted(conf, key=lambda n: -trials[n].values[0])
    lines = ["| trial | design | preset | proxy | confirmed (mean ± std, seeds, epochs) | proxy front | front after |",
             "|---:|---|---|---:|---|:---:|:---:|"]
    from nas.study import describe_arch

    for n in rows:
        t, c = trials[n], conf[n]
        lines.append(f"| {n} | {describe_arch(t.user_attrs)} | {t.user_attrs.get('preset', '')} | "
                     f"{t.values[0]:.4f} | {c['mean']:.4f} ± {c['std']:.4f} ({c['seeds']}, {c['epochs']}) | "
                     f"{'yes' if n in proxy_front else ''} | {'yes' if n in confirmed_front else ''} |")

    def tau(numbers: list[int]) -> str:
        if len(numbers) < 2:
            return "n/a"
        value = kendalltau([trials[n].values[0] for n in numbers], [conf[n]["mean"] for n in numbers]).statistic
        return f"{value:.2f} over {len(numbers)}"

    front_conf = [n for n in rows if n in proxy_front]
    stay = sum(1 for n in front_conf if n in confirmed_front)
    pairs = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:] if not_separated(conf[a], conf[b])]
    lines += ["", f"- Kendall tau, proxy against confirmed order: over the proxy front {tau(front_conf)}; over every "
                  f"confirmed design {tau(rows)}.",
              f"- Proxy front members that stay non-dominated once confirmed: {stay} of {len(front_conf)} confirmed "
              f"(front of {len(proxy_front)} by the proxy, {len(confirmed_front)} after).",
              f"- Pairs the noise does not separate (Welch 95%): "
              f"{', '.join(f'{a}/{b}' for a, b in pairs) if pairs else 'none'}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True)
    p.add_argument("--storage", default="sqlite:///runs/vitnas.db")
    args = p.parse_args(argv)
    print(report(args.study, args.storage))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
