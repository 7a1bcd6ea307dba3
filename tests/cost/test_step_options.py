"""StepOptions (cost.step_options): the keyword options cost.step.time_parts takes."""

import inspect

from sp_planner.cost.step import _time_parts
from sp_planner.cost.step_layers import layer_parts
from sp_planner.cost.step_options import LayerOptions, StepOptions


def test_step_options_are_time_parts_options():
    # Every keyword option time_parts and time_columns take (as StepOptions, handed to
    # _time_parts, which spells them out; its `priced` layers are positional), gpus_per_node the
    # one without a default, so time_columns(**options) can leave none out of the checks.
    params = inspect.signature(_time_parts).parameters
    keyword = {name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(StepOptions.__annotations__) == keyword
    required = {name for name in keyword if params[name].default is inspect.Parameter.empty}
    assert StepOptions.__required_keys__ == required == {"gpus_per_node"}


def test_layer_options_are_layer_parts_options():
    # cost.step_bound hands LayerOptions to layer_parts (its own `walked` aside), and StepOptions
    # adds only what the layers do not read: the step-end TP all-reduce of the sequence-parallel
    # parameters' gradients (cost.replicated_grads) and torchtitan's per-parameter ones
    # (cost.partial_tp_grads).
    params = inspect.signature(layer_parts).parameters
    keyword = {name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(LayerOptions.__annotations__) == keyword - {"walked"}
    assert set(StepOptions.__annotations__) - set(LayerOptions.__annotations__) == {"sums_sequence_parallel_grads",
                                                                                  "partial_tp_grads"}
