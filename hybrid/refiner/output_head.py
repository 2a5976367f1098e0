"""The refiner's output head over the slots a pass needs: the whole vocabulary, or each slot's listed tokens.

`OutputHeadMixin` is the Refiner's side of `canvas_logits`, `needed_logits` and `listed_logits`
(hybrid.refiner.model): which rows of a pass's final states the language-model head reads, where slot 0 takes the
prompt's prediction instead, and how a shortlist (hybrid.refining.shortlist) multiplies only its tokens' weight rows.
"""

from __future__ import annotations

import torch

from hybrid.refiner.cache import PromptState


class OutputHeadMixin:
    def _head(self, state: PromptState, hidden: torch.Tensor, slots: torch.Tensor, need: torch.Tensor | None, length: int,
              packed: bool = False, listed: tuple | None = None) -> torch.Tensor:
        """Output-head logits of the `need` slots (all when None; hidden[:, j] predicts slot slots[j], the prompt slot 0),
        scattered into a (B, L, V) tensor whose slot 0 always holds the prompt's prediction; with `packed` (and `need`),
        only those rows, (n, V) in row-major order; with `listed` too, as `listed_logits`."""
        wanted = torch.ones(hidden.shape[0], length, dtype=torch.bool, device=hidden.device) if need is None else need
        batch, slot = wanted.nonzero(as_tuple=True)
        by_head = slot > 0  # slot 0 is predicted by the prompt
        column = torch.full((length,), -1, dtype=torch.long, device=hidden.device)
        column[slots] = torch.arange(len(slots), device=hidden.device)
        lm_head = self.model.get_base_model().lm_head
        if packed and need is not None:
            # one head call over the needed rows in order, slot 0's rows reading a placeholder that the prompt's overwrites:
            # no (n, V) copy of the head's output
            rows = hidden[batch, column[slot].clamp(min=0)] if by_head.any() else None
            if listed is not None:
                return self._listed_head(state, rows, batch, by_head, *listed)
            if rows is None:
                return state.last_logits[batch].float()
            logits = lm_head(rows).float()
            logits[~by_head] = state.last_logits[batch[~by_head]].to(logits.dtype)
            return logits
        # written in place: copying logits[:, slots] out and back costs more than the head's rows
        logits = torch.zeros(hidden.shape[0], length, state.last_logits.shape[-1], device=hidden.device)
        logits[:, 0] = state.last_logits
        if by_head.any():
            logits[batch[by_head], slot[by_head]] = lm_head(hidden[batch[by_head], column[slot[by_head]]]).float()
        return logits

    def _listed_head(self, state: PromptState, rows: torch.Tensor | None, batch: torch.Tensor, by_head: torch.Tensor,
                     ids: torch.Tensor, rule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`listed_logits` from the needed rows' final states `rows` (n, H), or the prompt's prediction where `by_head`
        is False (None: nowhere else)."""
        lm_head = self.model.get_base_model().lm_head
        safe, first = ids.clamp(min=0), ~by_head
        listed = torch.empty(ids.shape, device=ids.device)
        if first.any():
            listed[first] = state.last_logits[batch[first]].float().gather(1, safe[first])
        if rows is not None:
            own = torch.bmm(lm_head.weight[safe[by_head]], rows[by_head, :, None]).squeeze(-1).float()
            listed[by_head] = own if lm_head.bias is None else own + lm_head.bias[safe[by_head]].float()
        whole = rule(listed) if callable(rule) else rule
        full = torch.empty(int(whole.sum()), state.last_logits.shape[-1], device=ids.device)
        if (whole & first).any():
            full[first[whole]] = state.last_logits[batch[whole & first]].float()
        if rows is not None and (whole & by_head).any():
            full[by_head[whole]] = lm_head(rows[whole & by_head]).float()
        return listed, full, whole
