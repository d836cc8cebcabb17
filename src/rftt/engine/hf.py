"""The Hugging Face backend: batched decoding with a KV cache, on CPU or one GPU.

Prompts are left-padded and decoded together; each prompt is prefilled once and its KV
cache copied to its `n` samples. Batching is continuous: at most `max_batch_rows` rows
(and `max_batch_tokens` tokens) decode at once; rows that finish leave the batch and
waiting prompts are prefilled into their places, so a long completion does not hold up
the prompts behind it. `stream` is the same loop fed by its caller: finished samples are
returned at once and the caller's next requests join the running batch. The model object
is shared, not copied: a training loop that updates it is generating with the new
weights on the next call.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Iterator, Sequence

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from rftt.engine.base import Engine, Feed
from rftt.engine.batch import Outputs, Rows, StreamQueue, drop_finished, join, new_cache, plain_cache_layers, shared_prefix_groups
from rftt.engine.prefix_cache import PrefixCache
from rftt.engine.sampling import apply_penalties, sample_tokens
from rftt.engine.stops import StopStrings, cut_at_stop
from rftt.engine.types import Completion, EngineError, Prompt, SamplingParams, StreamRequest, TokenListener

DEFAULT_MAX_BATCH_TOKENS = 65_536
DEFAULT_MIN_SHARED_PREFIX = 16
DEFAULT_MAX_BATCH_ROWS = 64
DEFAULT_PREFIX_CACHE_MIB = 0
_COMPACT_WHEN_FINISHED_FRACTION = 0.5
_REFILL_WHEN_FREE_FRACTION = 0.25


def cache_keyword(model: PreTrainedModel) -> str:
    """The name the model's forward takes its KV cache by: `cache` in newer transformers (which deprecate
    `past_key_values` and will remove it), `past_key_values` in older ones."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a LoRA wrapper: its model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class HFEngine(Engine):
    """Generation with a transformers model held in this process."""

    name = "hf"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
        min_shared_prefix: int = DEFAULT_MIN_SHARED_PREFIX,
        prefix_cache_mib: int = DEFAULT_PREFIX_CACHE_MIB,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_rows = max_batch_rows
        self.min_shared_prefix = min_shared_prefix
        self.prefix_cache = PrefixCache(prefix_cache_mib * 2**20) if prefix_cache_mib > 0 else None
        self.plain_cache = plain_cache_layers(model)
        self.cache_keyword = cache_keyword(model)
        self.refills = 0  # times waiting prompts joined a running batch (for throughput diagnostics)
        if self.prefix_cache is not None and not self.plain_cache:
            raise EngineError("prefix_cache_mib: this model's KV cache has sliding-window, shared or recurrent layers; "
                              "the prefix cache supports plain attention layers only (set prefix_cache_mib: 0)")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise EngineError("the tokenizer has neither a padding nor an end-of-sequence token")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt; text is encoded as is (templates add any special tokens they need)."""
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_special_tokens=False)
        ids = [int(token_id) for token_id in prompt]
        if not ids:
            raise EngineError("an empty token-id prompt cannot be continued")
        return ids

    def _chunks(self, lengths: list[int], rows_per_prompt: int, new_tokens: int) -> list[list[int]]:
        """Prompt indices grouped by length into chunks that respect the row and token bounds."""
        chunks: list[list[int]] = []
        for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
            chunk = chunks[-1] if chunks else None
            if chunk is not None:
                rows = (len(chunk) + 1) * rows_per_prompt
                if rows <= self.max_batch_rows and rows * (lengths[index] + new_tokens) <= self.max_batch_tokens:
                    chunk.append(index)
                    continue
            chunks.append([index])
        return chunks

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        results: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        batches = [[StreamRequest(prompt, params.n) for prompt in prompts]]
        for number, sample, completion in self.stream(lambda: batches.pop() if batches else [], params):
            results[number][sample] = completion
        return [[completion for completion in samples if completion is not None] for samples in results]

    def stream(self, feed: Feed, params: SamplingParams,
               listener: TokenListener | None = None) -> Iterator[tuple[int, int, Completion]]:
        """As `Engine.stream`; a `listener` is told each step's tokens and may stop requests (they end without a
        completion)."""
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        stop_strings = StopStrings(self.tokenizer, params.stop) if params.stop else None
        return self._decode(feed, params, generator, stop_strings, listener)

    def _left_pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _forward(self, input_ids, attention_mask, positions, cache) -> torch.Tensor:
        output = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
            use_cache=True, logits_to_keep=1, **{self.cache_keyword: cache},
        )
        return output.logits[:, -1, :].float()

    def _prefill(self, prompts: list[list[int]], copies: list[int]) -> tuple[Rows, DynamicCache]:
        """Run the prompts once and give each of its `copies` samples the same cache and logits.

        Prompts that share a long prefix (steps of one tree, samples of one question) have that
        prefix computed once: first the distinct prefixes, then every prompt's own remainder
        on top of its prefix's cache (padding inside a row is masked and skipped by positions).
        With a prefix cache, every prompt starts instead from its longest run of cached blocks:
        grouping would compute the remainder after a short shared stem (a chat template's system
        prompt) without the cache, which measured as most of a tree search's prefill time.
        """
        if self.prefix_cache is not None:
            self.prefix_cache.follow_weights(self.model)
        if self.prefix_cache is not None or min(len(prompt) for prompt in prompts) < 2:
            groups = [(0, list(range(len(prompts))))]  # with a prefix cache, each prompt starts from its cached blocks
        else:
            groups = shared_prefix_groups(prompts, self.min_shared_prefix)
        if groups[0][0] == 0:
            prefilled = self._prefill_whole(prompts)
            self._remember(prompts, prefilled[1], prefilled[3])
            return self._expand(*prefilled, copies)
        prefix_lengths = torch.tensor([length for length, _ in groups])
        _, prefix_mask, _, cache = self._prefill_whole([prompts[members[0]][:length] for length, members in groups])
        group_of = torch.empty(len(prompts), dtype=torch.long)
        for group, (_, members) in enumerate(groups):
            group_of[members] = group
        cache.batch_select_indices(group_of.to(self.device))
        suffix_ids, suffix_mask = self._left_pad([prompt[int(prefix_lengths[group_of[row]]):]
                                                  for row, prompt in enumerate(prompts)])
        attention_mask = torch.cat([prefix_mask[group_of.to(self.device)], suffix_mask], dim=1)
        positions = (prefix_lengths[group_of].to(self.device)[:, None] + suffix_mask.cumsum(-1) - 1).clamp(min=0)
        logits = self._forward(suffix_ids, attention_mask, positions, cache)
        self._remember(prompts, attention_mask, cache)
        return self._expand(logits, attention_mask, positions, cache, copies)

    def _prefill_whole(self, prompts: list[list[int]]):
        """All prompts in one forward pass, on top of their cached blocks (if any are cached)."""
        cached = [self.prefix_cache.lookup(prompt) if self.prefix_cache else [] for prompt in prompts]
        cache, cached_mask = self._cache_of(cached)
        cached_lengths = cached_mask.sum(-1)
        input_ids, new_mask = self._left_pad([prompt[int(length):] for prompt, length in zip(prompts, cached_lengths)])
        attention_mask = torch.cat([cached_mask, new_mask], dim=1)
        positions = (cached_lengths[:, None] + new_mask.cumsum(-1) - 1).clamp(min=0)
        return self._forward(input_ids, attention_mask, positions, cache), attention_mask, positions, cache

    def _cache_of(self, cached: list[list[int]]) -> tuple[DynamicCache, torch.Tensor]:
        """A KV cache holding each row's cached blocks, right-aligned, and its attention mask."""
        width = max(len(block_ids) for block_ids in cached) * (self.prefix_cache.block_size if self.prefix_cache else 0)
        mask = torch.zeros((len(cached), width), dtype=torch.long, device=self.device)
        if width == 0:
            return new_cache(self.model.config, self.plain_cache), mask
        layers = len(new_cache(self.model.config, self.plain_cache).layers)
        per_layer: list[tuple[torch.Tensor, torch.Tensor]] = []
        for row, block_ids in enumerate(cached):
            if not block_ids:
                continue
            keys, values = self.prefix_cache.gather(block_ids, layers)
            if not per_layer:
                per_layer = [(keys[layer].new_zeros((len(cached), keys[layer].shape[0], width, keys[layer].shape[2])),
                              values[layer].new_zeros((len(cached), values[layer].shape[0], width, values[layer].shape[2])))
                             for layer in range(layers)]
            length = keys[0].shape[1]
            for layer in range(layers):
                per_layer[layer][0][row, :, width - length :] = keys[layer]
                per_layer[layer][1][row, :, width - length :] = values[layer]
            mask[row, width - length :] = 1
        return new_cache(self.model.config, self.plain_cache, per_layer), mask

    def _remember(self, prompts: list[list[int]], attention_mask: torch.Tensor, cache: DynamicCache) -> None:
        """Store each prompt's keys and values (its unmasked columns, in order) in the prefix cache."""
        if self.prefix_cache is None:
            return
        for row, prompt in enumerate(prompts):
            if len(prompt) < self.prefix_cache.block_size:
                continue
            columns = attention_mask[row].nonzero().flatten()
            self.prefix_cache.store(prompt, [layer.keys[row].index_select(1, columns) for layer in cache.layers],
                                    [layer.values[row].index_select(1, columns) for layer in cache.layers])

    def _expand(self, logits, attention_mask, positions, cache, copies: list[int]) -> tuple[Rows, DynamicCache]:
        """Give each prompt's samples (`copies[prompt]` of them) the same cache and logits."""
        if any(count != 1 for count in copies):
            select = torch.arange(len(copies), device=self.device).repeat_interleave(
                torch.tensor(copies, device=self.device))
            cache.batch_select_indices(select)
            logits, attention_mask, positions = logits[select], attention_mask[select], positions[select]
        index = torch.arange(logits.shape[0], device=self.device)
        finished = torch.zeros_like(index, dtype=torch.bool)
        return Rows(index, attention_mask, positions[:, -1] + 1, logits, finished, torch.zeros_like(index),
                    torch.zeros_like(index)), cache

    def _stop_ids(self, params: SamplingParams) -> torch.Tensor:
        ids = set(params.stop_token_ids)
        if not params.ignore_eos and self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return torch.tensor(sorted(ids), dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def _decode(
        self, feed: Feed, params: SamplingParams, generator: torch.Generator | None, stop_strings: StopStrings | None,
        listener: TokenListener | None,
    ) -> Iterator[tuple[int, int, Completion]]:
        """Continuous batching: rows that finish are yielded and leave the batch, and waiting requests (asked
        of `feed` once something has finished) are prefilled into their places.

        Rows are numbered as requests arrive; row r's tokens are row r of the output buffers, and
        each row counts its own steps, so rows admitted later decode beside rows admitted earlier.
        """
        queue = StreamQueue(params)
        outputs = Outputs(params.max_new_tokens, self.pad_id, self.device, params.top_logprobs)
        stop_reasons: dict[int, str | int] = {}
        stop_ids = self._stop_ids(params)
        rows: Rows | None = None
        cache: DynamicCache | None = None
        hungry, live_rows = True, 0  # the count of live rows is kept here, so no step asks the device for it
        admissible = True  # whether waiting requests may fit now: not again until rows end or requests arrive
        while True:
            if hungry and queue.waiting_rows() < self.max_batch_rows - live_rows:
                hungry, admissible = False, True
                queue.add([replace(request, prompt=self.encode(request.prompt)) for request in feed()])
                outputs.reserve(len(queue.owners))
            if admissible and queue.waiting and (rows is None or (self.plain_cache and
                                                                  self.max_batch_rows - live_rows >= self._refill_rows)):
                rows, cache = self._admit(rows, cache, queue, params)
                live_rows, admissible = (0 if rows is None else rows.index.numel()), False
            if rows is None:
                return
            new_tokens = sample_tokens(self._penalised(rows, outputs, params), params.temperature, params.top_k,
                                       params.top_p, generator)
            live = ~rows.finished
            if listener is not None:
                stopped, stopped_rows = self._tell(listener, queue, rows, live, new_tokens)
                if stopped is not None:
                    rows.finished, live = rows.finished | stopped, live & ~stopped
                    live_rows, admissible = live_rows - stopped_rows, True
            outputs.record(rows.index, rows.steps, new_tokens, rows.logits, live)
            rows.steps = rows.steps + live.long()
            done = torch.isin(new_tokens, stop_ids) & live
            if stop_strings:
                for row in stop_strings.candidate_rows(new_tokens).tolist():
                    original = int(rows.index[row])
                    if not live[row] or done[row]:
                        continue
                    stop = stop_strings.completed(outputs.tokens[original, : int(rows.steps[row])].tolist())
                    if stop is not None:
                        stop_reasons[original], done[row] = stop, True
            ended = (done | (rows.steps >= rows.limit)) & live
            ended_rows = ended.nonzero().flatten()
            if ended_rows.numel():  # the step's host sync; the rows' facts are read only when some ended
                rows.finished = rows.finished | ended
                live_rows -= ended_rows.numel()
                hungry = admissible = True
                facts = torch.stack([rows.index, rows.steps, done.long(), new_tokens])[:, ended_rows].tolist()
                for original, length, by_token, token in zip(*facts):
                    number, sample = queue.owners[original]
                    yield number, sample, self._completion(
                        outputs.tokens[original, :length].tolist(), outputs.logprobs[original, :length].tolist(),
                        stop_reasons.pop(original, token if by_token else None), params, len(queue.prompts[number]),
                        outputs.top(original, length))
            if live_rows == 0:
                rows, cache = None, None
                continue
            if live_rows <= (1 - _COMPACT_WHEN_FINISHED_FRACTION) * rows.index.numel():
                new_tokens = new_tokens[~rows.finished]
                rows, cache = drop_finished(rows, cache, trim=self.plain_cache)
            rows, cache = self._advance(rows, cache, new_tokens)

    def _penalised(self, rows: Rows, outputs: Outputs, params: SamplingParams) -> torch.Tensor:
        """The logits to sample from: the model's, lowered for tokens already generated when penalties are set."""
        if not (params.presence_penalty or params.frequency_penalty):
            return rows.logits
        return apply_penalties(rows.logits, outputs.tokens[rows.index], rows.steps, params.presence_penalty,
                               params.frequency_penalty)

    def _tell(self, listener: TokenListener, queue: StreamQueue, rows: Rows, live: torch.Tensor,
              new_tokens: torch.Tensor) -> tuple[torch.Tensor | None, int]:
        """Tell the listener each live row's new token (one read of the device); the live rows of the requests
        it stops, as a mask and a count (None and 0 when it stops none, as on almost every step)."""
        indices, alive, tokens = torch.stack([rows.index, live.long(), new_tokens]).tolist()
        owners = [queue.owners[index] for index in indices]
        told = [(number, sample, token) for (number, sample), token, row_alive in zip(owners, tokens, alive) if row_alive]
        stopped = set(listener(told))
        if not stopped:
            return None, 0
        hits = [bool(row_alive) and number in stopped for (number, _), row_alive in zip(owners, alive)]
        return torch.tensor(hits, device=self.device), sum(hits)

    @property
    def _refill_rows(self) -> int:
        """Free rows that make it worth prefilling waiting prompts into a running batch."""
        return max(1, int(_REFILL_WHEN_FREE_FRACTION * self.max_batch_rows))

    def _admit(self, rows: Rows | None, cache: DynamicCache | None, queue: StreamQueue,
               params: SamplingParams) -> tuple[Rows, DynamicCache]:
        """Drop finished rows, then prefill as many waiting requests as the row and token bounds allow and
        add their rows to the batch (the narrower of the two caches is padded on the left)."""
        if rows is not None:
            rows, cache = drop_finished(rows, cache, trim=True)
        live = 0 if rows is None else rows.index.numel()
        width = 0 if rows is None else rows.attention_mask.shape[1]
        admitted: list[int] = []
        rows_after = live
        while queue.waiting:
            number = queue.waiting[0]
            rows_after += queue.samples[number]
            tokens_after = rows_after * (max(width, len(queue.prompts[number])) + params.max_new_tokens)
            if (admitted or live) and (rows_after > self.max_batch_rows or tokens_after > self.max_batch_tokens):
                break
            admitted.append(queue.waiting.pop(0))
        if not admitted:
            return rows, cache
        new_rows, new_cache = self._prefill([queue.prompts[number] for number in admitted],
                                            [queue.samples[number] for number in admitted])
        new_rows.index = torch.tensor([row for number in admitted for row in queue.rows_of(number)], device=self.device)
        new_rows.limit = torch.tensor([queue.limits[number] for number in admitted for _ in queue.rows_of(number)],
                                      device=self.device)
        if rows is None or rows.index.numel() == 0:
            return new_rows, new_cache
        self.refills += 1
        return join(rows, cache, new_rows, new_cache)

    def _advance(self, rows: Rows, cache: DynamicCache, new_tokens: torch.Tensor) -> tuple[Rows, DynamicCache]:
        """Feed the new tokens to the batch (finished rows are fed padding)."""
        new_tokens = torch.where(rows.finished, torch.full_like(new_tokens, self.pad_id), new_tokens)
        attention_mask = torch.cat([rows.attention_mask, torch.ones_like(rows.attention_mask[:, :1])], dim=1)
        logits = self._forward(new_tokens[:, None], attention_mask, rows.next_position[:, None], cache)
        return Rows(rows.index, attention_mask, rows.next_position + 1, logits, rows.finished, rows.steps,
                    rows.limit), cache

    def _completion(
        self, token_ids: list[int], logprobs: list[float], stop_reason: str | int | None, params: SamplingParams,
        prompt_tokens: int, top_logprobs: list[list[tuple[int, float]]] | None = None,
    ) -> Completion:
        text = self.visible_text(token_ids, params)
        if isinstance(stop_reason, str):
            text = cut_at_stop(text, params.stop)
        finish_reason = "stop" if stop_reason is not None else "length"
        return Completion(text, token_ids, logprobs, finish_reason, stop_reason, prompt_tokens, top_logprobs=top_logprobs)

    def hidden_token_ids(self, params: SamplingParams) -> set[int]:
        """Tokens a completion's text leaves out: end-of-sequence and padding, unless they are stop tokens."""
        return {self.tokenizer.eos_token_id, self.pad_id} - set(params.stop_token_ids)

    def visible_text(self, token_ids: Sequence[int], params: SamplingParams) -> str:
        """The text of generated tokens, without the hidden ones."""
        hidden = self.hidden_token_ids(params)
        return self.tokenizer.decode([token for token in token_ids if token not in hidden], skip_special_tokens=False)

    @torch.inference_mode()
    def next_token_logprobs(self, prefixes: Sequence[Prompt], candidate_token_ids: Sequence[int]) -> list[list[float]]:
        """Through the prefix cache when it is on, which also keeps these prefixes: a tree search asks for a
        node's move priors, then writes its children on top of the same prefix."""
        encoded = [self.encode(prefix) for prefix in prefixes]
        candidates = torch.tensor(list(candidate_token_ids), dtype=torch.long, device=self.device)
        results: list[list[float]] = [[] for _ in encoded]
        if self.prefix_cache is not None:
            self.prefix_cache.follow_weights(self.model)
        for chunk in self._chunks([len(ids) for ids in encoded], 1, 1):
            prefixes = [encoded[i] for i in chunk]
            logits, attention_mask, _, cache = self._prefill_whole(prefixes)
            self._remember(prefixes, attention_mask, cache)
            chosen = torch.log_softmax(logits, dim=-1)[:, candidates]
            for position, index in enumerate(chunk):
                results[index] = chosen[position].tolist()
        return results

