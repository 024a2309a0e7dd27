"""The end of a run: close its loggers and environments, then write each seed's ``curve.png`` and ``summary.json``
and print the summary (one line per seed with several, and which seeds a NaN/inf loss stopped)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rlfocal import runlog

if TYPE_CHECKING:
    from rlfocal.train import Run


def close_logs(r: Run) -> None:
    """Close every seed's logger (CSV files, wandb run)."""
    for lane in r.lanes:
        lane.log.close()


def finish(r: Run) -> dict:
    """Close everything, then write each seed's ``curve.png`` and ``summary.json`` and print the summary (with
    several seeds: one line per seed, and which stopped)."""
    cfg, c = r.cfg, r.counters
    close_logs(r)
    r.envs.close()
    summaries = []
    for k, lane in enumerate(r.lanes):
        lane.eval_env.close()
        metrics = lane.run_dir / "metrics.csv"
        runlog.plot_curve(metrics, lane.run_dir / "curve.png", f"{cfg.env.name}: {r.arm}, seed {lane.seed}")
        extra = {
            "arm": r.arm,
            "env": cfg.env.name,
            "seed": lane.seed,
            "updates": c.updates,
            "sps": c.global_step / max(c.wall_time_s, 1e-9),
            "wall_time_s": c.wall_time_s,
            "eval_episodes": cfg.eval_episodes,
            "stopped_nonfinite": k in c.stopped,
            "num_seeds": cfg.num_seeds,
            "run_dir": str(lane.run_dir),
        }
        summaries.append(runlog.summarize(metrics, extra))
        runlog.write_json(lane.run_dir / "summary.json", summaries[-1])
    if len(summaries) == 1:
        runlog.print_summary(summaries[0])
        return summaries[0]
    finals = [s["final_eval_return"] for s in summaries]
    for s in summaries:
        note = "  (stopped: NaN/inf loss)" if s["stopped_nonfinite"] else ""
        print(f"seed {s['seed']:>4}: final eval return {s['final_eval_return']:10.2f}{note}")
    stopped = [r.lanes[k].seed for k in c.stopped]
    print(
        f"{len(summaries)} seeds, {c.global_step / max(c.wall_time_s, 1e-9):,.0f} env steps/s per seed; "
        f"stopped by NaN/inf: {stopped or 'none'}"
    )
    return {"final_eval_return": float(np.nanmean(finals)), "seeds": summaries, "stopped": stopped}
