"""The registered model's MLflow flavour: base model + LoRA adapter as an ``mlflow.pyfunc`` model, so a user
can ``mlflow.pyfunc.load_model("models:/crawl2serve-lora@champion").predict({"prompt": [...]})``."""

import mlflow.pyfunc
import pandas as pd


class LoraAdapterModel(mlflow.pyfunc.PythonModel):
    """Artifacts: ``adapter`` (the peft adapter folder). Model config: ``base_model`` (path or Hub id),
    ``max_new_tokens`` (default 64)."""

    def load_context(self, context):
        from crawl2serve.assets.release.evaluate import load_candidate

        self.model, self.tokenizer = load_candidate(context.model_config["base_model"], context.artifacts["adapter"])
        self.max_new_tokens = int(context.model_config.get("max_new_tokens", 64))

    # model_input: a DataFrame with a "prompt" column (what pyfunc hands over), a {"prompt": [...]} dict or a list
    # of prompts. The DataFrame hint is one MLflow infers no schema from, so it validates nothing (as without a
    # hint) and does not warn "Add type hints to the `predict` method" at import: once per Dagster step process.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        import torch

        prompts = (
            list(model_input["prompt"])
            if hasattr(model_input, "__getitem__") and not isinstance(model_input, list)
            else list(model_input)
        )
        limit = int((params or {}).get("max_new_tokens", self.max_new_tokens))
        out = []
        for prompt in prompts:
            ids = self.tokenizer(prompt, return_tensors="pt").to(self.model.device)
            with torch.no_grad():
                gen = self.model.generate(
                    **ids, max_new_tokens=limit, do_sample=False, pad_token_id=self.tokenizer.pad_token_id
                )
            out.append(self.tokenizer.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
        return out
