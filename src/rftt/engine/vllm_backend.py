"""The `vllm` backend: vLLM's offline `LLM` in this process, with prefix caching on (GPU only).

vLLM is an optional extra (`pip install rftt[vllm]`) imported on first use, so this
module imports without it. Functional tokens are ranked from vLLM's top log-probabilities
(at most `max_logprobs` of them; a candidate outside them gets -inf).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from rftt.engine.base import Engine
from rftt.engine.types import Completion, EngineError, Prompt, SamplingParams

DEFAULT_MAX_LOGPROBS = 20


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:
        raise EngineError(f"the vllm backend needs vLLM on a GPU machine: pip install 'rftt[vllm]' ({error})") from None
    return vllm


class VLLMEngine(Engine):
    """Generation with vLLM's offline engine."""

    name = "vllm"

    def __init__(self, model: str, *, max_logprobs: int = DEFAULT_MAX_LOGPROBS, **engine_options: Any):
        vllm = _import_vllm()
        self._vllm = vllm
        self.max_logprobs = max_logprobs
        self.llm = vllm.LLM(model=model, enable_prefix_caching=True, max_logprobs=max_logprobs, **engine_options)
        self.tokenizer = self.llm.get_tokenizer()

    def _prompt(self, prompt: Prompt) -> Any:
        if isinstance(prompt, str):
            return self._vllm.inputs.TokensPrompt(prompt_token_ids=self.tokenizer.encode(prompt, add_special_tokens=False))
        return self._vllm.inputs.TokensPrompt(prompt_token_ids=[int(token_id) for token_id in prompt])

    def _sampling_params(self, params: SamplingParams) -> Any:
        return self._vllm.SamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or -1,
            max_tokens=params.max_new_tokens, stop=list(params.stop), stop_token_ids=list(params.stop_token_ids),
            seed=params.seed, ignore_eos=params.ignore_eos, logprobs=params.top_logprobs, skip_special_tokens=False,
            presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty,
        )

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        outputs = self.llm.generate([self._prompt(prompt) for prompt in prompts], self._sampling_params(params),
                                    use_tqdm=False)
        return [[self._completion(sample, len(output.prompt_token_ids), params.top_logprobs) for sample in output.outputs]
                for output in outputs]

    @staticmethod
    def _completion(sample: Any, prompt_tokens: int, top_logprobs: int) -> Completion:
        token_ids = list(sample.token_ids)
        steps = sample.logprobs or []
        logprobs = [step[token_id].logprob for step, token_id in zip(steps, token_ids)]
        top = None
        if top_logprobs:  # each step holds the chosen token and the top ones; keep the top ones, best first
            top = [sorted(((token_id, entry.logprob) for token_id, entry in step.items() if entry.rank <= top_logprobs),
                          key=lambda pair: -pair[1]) for step in steps]
        finish_reason = "length" if sample.finish_reason == "length" else "stop"
        return Completion(sample.text, token_ids, logprobs, finish_reason, sample.stop_reason, prompt_tokens, top)

    def next_token_logprobs(self, prefixes: Sequence[Prompt], candidate_token_ids: Sequence[int]) -> list[list[float]]:
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.max_logprobs)
        outputs = self.llm.generate([self._prompt(prefix) for prefix in prefixes], params, use_tqdm=False)
        results = []
        for output in outputs:
            top = output.outputs[0].logprobs[0]
            results.append([top[token_id].logprob if token_id in top else -math.inf for token_id in candidate_token_ids])
        return results

    def close(self) -> None:
        del self.llm
