"""What the Megatron-based emitters (Megatron-LM, MindSpeed) say about the model's position
embedding, which they do not emit (an architecture flag) but whose length --max-position-embeddings
sets, and the one Megatron-LM cannot run (ALiBi)."""

from __future__ import annotations

from sp_planner.flags.base import FlagRequest


def position_note(request: FlagRequest, *, mindspeed: bool = False) -> str:
    """What --max-position-embeddings (set to seq_len) means for the model's position embedding
    (ModelSpec.position_embedding; Megatron --position-embedding-type, arguments.py at d98e8a64dd
    lines 2397-2398: learned_absolute, rope, yarn, mrope, relative, none)."""
    lead = f"--max-position-embeddings is set to seq_len {request.workload.seq_len}"
    kind = request.model.position_embedding
    if kind == "learned_absolute":
        # LanguageModelEmbedding's position table has max_sequence_length rows
        # (language_model_embedding.py: torch.nn.Embedding(max_sequence_length, hidden_size)).
        return (f"{lead}: under --position-embedding-type learned_absolute (Megatron's default) that is the "
                "learned position table's length, so a checkpoint trained on fewer positions needs its table "
                "extended.")
    if kind == "alibi":  # MindSpeed only: Megatron-LM refuses it (position_failures)
        # mindspeed/arguments.py at 028de58c _add_alibi_args adds the choice.
        return f"{lead}; pass --position-embedding-type alibi with the other architecture flags."
    if kind == "none":
        return f"{lead}; pass --position-embedding-type none (the model has no position embedding)."
    return f"{lead}; use a RoPE base/scaling suited to that length."


def position_failures(request: FlagRequest) -> list[str]:
    """Megatron-LM has no ALiBi: --position-embedding-type takes learned_absolute, rope, yarn, mrope,
    relative or none (arguments.py at d98e8a64dd lines 2397-2398; core_v0.12.1 lines 1250-1251
    without yarn), and nothing under megatron/ at d98e8a64dd mentions ALiBi, so an ALiBi model's
    plan cannot be run as planned (MindSpeed adds the choice, flags.mindspeed)."""
    if request.model.position_embedding != "alibi":
        return []
    return [f"{request.model.name}'s ALiBi cannot be expressed: Megatron-LM's --position-embedding-type has no "
            "alibi (learned_absolute, rope, yarn, mrope, relative, none; arguments.py); MindSpeed adds it "
            "(--framework mindspeed)"]
