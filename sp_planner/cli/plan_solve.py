"""sp-plan's work between the question and the answer: search, the framework's plans, simulation,
and the checked fixes when nothing fits, with a progress line on a terminal."""

from __future__ import annotations

from sp_planner.cli.plan_output import Answer
from sp_planner.cli.progress import delayed_progress
from sp_planner.cli.question import PlanQuestion
from sp_planner.flags import release_runtime
from sp_planner.present.advice import FitSuggestion, suggest_fits
from sp_planner.present.expressible import expressible_plans
from sp_planner.search import SEARCH_STEPS, search


def solve(question: PlanQuestion, *, top: int, simulate: int | None, framework: str,
          launcher: str | None, every_row: bool = False) -> Answer:
    """Rank every plan; for one framework also the plans it can express with the question's flag
    choices (the table shows those).
    --simulate K re-ranks the best K of both. `every_row`: the frame of every plan will be read (a
    report), so the search keeps every costed row (search.search)."""
    q = question
    # Time and size plans as the framework runs them with the flags sp-plan emits: its overlap,
    # training states and TP gathers (cost.runtime; Megatron's for "all"; torchtitan's by release).
    runtime = release_runtime(framework, q.flag_choices.framework_version, model=q.model)
    where = dict(num_nodes=q.num_nodes, gpus_per_node=q.gpus_per_node)
    # At least two, so that "why this plan" compares the winner with the runner-up under --top 1.
    wanted = max(top, simulate or 0, 2)
    with delayed_progress("searching plans") as update:
        result = search(q.model, q.hardware, q.workload, **where, pins=q.pins, top_k=wanted, progress=update,
                        runtime=runtime, every_row=every_row)
        fits = bool(result.ranked) and result.ranked[0].fits
        framework_ranked = () if framework == "all" or not fits else expressible_plans(
            result, framework, model=q.model, workload=q.workload, **where, top_k=wanted,
            choices=q.flag_choices, progress=update)
        if simulate is not None:
            from sp_planner.sim.rerank import rerank_by_simulation, with_known  # the simulator loads only when asked

            update(SEARCH_STEPS, SEARCH_STEPS, f"simulating the best {simulate} plans")
            known: dict = {}  # plan -> simulated step, shared by the two rankings
            if framework_ranked:  # the plans the table shows
                mine = result.model_copy(update={"ranked": framework_ranked})
                framework_ranked = rerank_by_simulation(mine, q.model, q.hardware, q.workload, **where,
                                                        top_k=simulate, runtime=runtime, known=known).ranked
            # Every plan's ranking too, for --format json (which lists every framework's plans),
            # with the framework's simulated plans it does not hold (its head lies past the
            # search's first K where the framework expresses few of them): the two rankings'
            # bests then differ only by a plan the framework cannot express.
            held = {est.plan for est in result.ranked}
            extra = tuple(est for est in framework_ranked if est.plan in known and est.plan not in held)
            result = rerank_by_simulation(result.model_copy(update={"ranked": result.ranked + extra}), q.model,
                                          q.hardware, q.workload, **where, top_k=simulate, runtime=runtime,
                                          known=known)
            # Plans the second ranking simulated that the first holds past its head.
            framework_ranked = with_known(tuple(framework_ranked), known)
        suggestions: tuple[FitSuggestion, ...] = ()
        if not fits:
            update(SEARCH_STEPS, SEARCH_STEPS, "no plan fits: checking what would make one fit")
            suggestions = suggest_fits(q.model, q.hardware, q.workload, **where, pins=q.pins,
                                       batch_scales_with_gpus=q.default_batch, runtime=runtime,
                                       closest=result.ranked[0].plan if result.ranked else None)
    shown = framework_ranked or result.ranked  # the ranking the table shows the head of
    return Answer(question=q, result=result, suggestions=suggestions, top_k=top, framework=framework,
                  launcher=launcher, framework_ranked=framework_ranked[:top],
                  runner_up=shown[1] if len(shown) > 1 else None)
