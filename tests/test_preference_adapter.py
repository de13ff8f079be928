"""The preference adapters: no reference forward for reference-free losses, data checks,
refusals, parameter binding, and short LoRA / QLoRA runs of all five algorithms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
from transformers.models.llama.modeling_llama import LlamaModel
from trl import DPOConfig, KTOConfig

from rlplug import build_trainer, hookimpl
from rlplug.core import plugins
from rlplug.core.preference import PreferenceDataError, preference_loss, unpaired_reward_metrics
from rlplug.core.resolve import ComponentConfigError
from rlplug.demo.arithmetic_preference import preference_dataset

PAIRED = ("dpo", "ipo", "cpo", "simpo")
ALL = (*PAIRED, "kto")


@pytest.fixture(scope="module")
def datasets():
    return {data: preference_dataset(data).select(range(32)) for data in ("paired", "unpaired")}


def rows_for(algorithm, datasets):
    return datasets["unpaired" if algorithm == "kto" else "paired"]


def trl_fields(tmp_path, **fields):
    return {
        "output_dir": str(tmp_path), "per_device_train_batch_size": 8, "bf16": False, "gradient_checkpointing": False,
        "report_to": "none", "save_strategy": "no", "disable_tqdm": True, "logging_steps": 1, "use_cpu": True, **fields,
    }


def lora():
    return LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")


class ForwardCounter:
    """Counts forward passes of every Llama backbone (policy, reference copy, adapter-disabled)."""

    def __init__(self):
        self.calls = 0
        self._handle = None

    def __enter__(self):
        def hook(module, args):
            if isinstance(module, LlamaModel):
                self.calls += 1

        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()


# ---- no reference forward, no reference copy ---------------------------------------------


@pytest.mark.parametrize("algorithm, forwards_per_step", [("cpo", 1), ("simpo", 1), ("dpo", 2)])
@pytest.mark.parametrize("peft", [True, False], ids=["lora", "full"])
def test_reference_free_losses_run_no_reference_forward(
    tiny_model_dir, tmp_path, datasets, monkeypatch, algorithm, forwards_per_step, peft
):
    trainer = build_trainer(
        algorithm, model=tiny_model_dir, train_dataset=rows_for(algorithm, datasets),
        peft_config=lora() if peft else None, **trl_fields(tmp_path, max_steps=2),
    )
    reference_calls = []
    original = trainer.compute_ref_log_probs
    monkeypatch.setattr(trainer, "compute_ref_log_probs", lambda *a: reference_calls.append(1) or original(*a))
    with ForwardCounter() as counter:
        trainer.train()
    assert counter.calls == 2 * forwards_per_step
    # dpo is the negative control: its reference forward is counted, so the counter sees it.
    assert len(reference_calls) == (2 if algorithm == "dpo" else 0)


@pytest.mark.parametrize("algorithm, copies", [("cpo", 1), ("simpo", 1), ("dpo", 2)])
def test_full_fine_tuning_loads_no_reference_copy_for_reference_free_losses(
    tiny_model_dir, tmp_path, datasets, monkeypatch, algorithm, copies
):
    import trl.trainer.dpo_trainer as dpo_module

    loaded = []
    original = dpo_module.create_model_from_path
    monkeypatch.setattr(dpo_module, "create_model_from_path", lambda *a, **k: loaded.append(a[0]) or original(*a, **k))
    trainer = build_trainer(algorithm, model=tiny_model_dir, train_dataset=rows_for(algorithm, datasets),
                            **trl_fields(tmp_path))
    assert len(loaded) == copies  # the policy, plus the reference copy for dpo only
    assert (trainer.ref_model is None) == (algorithm != "dpo")
    assert trainer.args.precompute_ref_log_probs is False and trainer.precompute_ref_logps is False


@preference_loss(data="unpaired", needs_reference=False)
def unpaired_logsigmoid(batch, beta=0.1):
    """A reference-free unpaired loss: -log sigmoid(+-beta * mean token log-prob)."""
    sign = batch.labels.to(batch.logps.dtype) * 2 - 1
    average = batch.logps / batch.lengths
    return -F.logsigmoid(beta * sign * average), unpaired_reward_metrics(beta * average, batch.labels)


class ReferenceFreeUnpaired:
    @hookimpl
    def register_preference_losses(self, register):
        register("unpaired_logsigmoid", unpaired_logsigmoid)


def test_unpaired_adapter_skips_reference_and_kl_pairs_for_a_loss_that_reads_neither(
    tiny_model_dir, tmp_path, datasets
):
    plugins.get_plugin_manager().register(ReferenceFreeUnpaired(), name="test-reference-free-unpaired")
    plugins.invalidate_registry()
    trainer = build_trainer("kto", model=tiny_model_dir, train_dataset=datasets["unpaired"],
                            preference_loss="unpaired_logsigmoid", **trl_fields(tmp_path, max_steps=2))
    assert trainer.ref_model is None and "KL_completion_ids" not in trainer.train_dataset.column_names
    with ForwardCounter() as counter:
        trainer.train()
    assert counter.calls == 2
    assert math.isfinite(trainer.state.log_history[0]["loss"])


def test_kto_runs_policy_kl_and_reference_forwards(tiny_model_dir, tmp_path, datasets):
    # The negative control for the test above: with kto, each step runs the policy on the KL pairs,
    # the policy, and the reference on both (adapter disabled): 4 forwards.
    trainer = build_trainer("kto", model=tiny_model_dir, train_dataset=datasets["unpaired"], peft_config=lora(),
                            **trl_fields(tmp_path, max_steps=2))
    assert "KL_completion_ids" in trainer.train_dataset.column_names
    with ForwardCounter() as counter:
        trainer.train()
    assert counter.calls == 8


# ---- bad data and refused combinations ------------------------------------------------------


@pytest.mark.parametrize(
    "algorithm, rows, missing",
    [
        ("dpo", [{"prompt": "1+1+1=", "completion": "3"}], "chosen, rejected"),
        ("simpo", [{"prompt": "1+1+1=", "chosen": "3"}], "rejected"),
        ("kto", [{"prompt": "1+1+1=", "completion": "3"}], "label"),
        ("kto", [{"prompt": "1+1+1=", "chosen": "3"}], "completion, label"),
    ],
)
def test_missing_columns_give_a_one_line_error(tiny_model_dir, tmp_path, algorithm, rows, missing):
    with pytest.raises(PreferenceDataError) as error:
        build_trainer(algorithm, model=tiny_model_dir, train_dataset=Dataset.from_list(rows), **trl_fields(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert f"algorithm {algorithm!r}" in message and f"lacks column(s) {missing};" in message


def test_missing_columns_in_the_eval_dataset_are_caught_too(tiny_model_dir, tmp_path, datasets):
    with pytest.raises(PreferenceDataError, match="lacks column\\(s\\) rejected"):
        build_trainer("dpo", model=tiny_model_dir, train_dataset=datasets["paired"],
                      eval_dataset=Dataset.from_list([{"prompt": "1+1+1=", "chosen": "3"}]), **trl_fields(tmp_path))


@pytest.mark.parametrize(
    "algorithm, fields, match",
    [
        # TRL's loss variants run (tests/test_preference_loss_types_parity.py); a field the chosen
        # loss cannot read is refused, not ignored.
        ("simpo", {"f_divergence_type": "js_divergence"}, "f_divergence_type"),
        ("cpo", {"label_smoothing": 0.1}, "label_smoothing"),
    ],
)
def test_trl_loss_fields_the_loss_cannot_read_are_refused(tiny_model_dir, tmp_path, datasets, algorithm, fields,
                                                          match):
    with pytest.raises(NotImplementedError, match=match):
        build_trainer(algorithm, model=tiny_model_dir, train_dataset=rows_for(algorithm, datasets),
                      **trl_fields(tmp_path, **fields))


@pytest.mark.parametrize("algorithm, fields", [("ipo", {"loss_type": ["hinge"]}), ("kto", {"loss_type": "bogus"})])
def test_a_trl_loss_type_conflicting_with_the_recipe_or_unknown_is_refused(tiny_model_dir, tmp_path, datasets,
                                                                           algorithm, fields):
    with pytest.raises(ComponentConfigError, match="give the loss once|has no rlplug preference loss"):
        build_trainer(algorithm, model=tiny_model_dir, train_dataset=rows_for(algorithm, datasets),
                      **trl_fields(tmp_path, **fields))


def test_a_loss_for_the_other_kind_of_data_is_refused(tiny_model_dir, tmp_path, datasets):
    with pytest.raises(ComponentConfigError, match="'dpo_sigmoid' takes paired data"):
        build_trainer("kto", model=tiny_model_dir, train_dataset=datasets["unpaired"], preference_loss="dpo_sigmoid",
                      **trl_fields(tmp_path))


def test_reward_funcs_and_kl_are_refused_for_preference_algorithms(tiny_model_dir, tmp_path, datasets):
    with pytest.raises(ValueError, match="takes no reward_funcs"):
        build_trainer("dpo", model=tiny_model_dir, train_dataset=datasets["paired"],
                      reward_funcs=["arithmetic_exact_match"], **trl_fields(tmp_path))
    with pytest.raises(ComponentConfigError, match="drop the `kl` setting"):
        build_trainer("dpo", model=tiny_model_dir, train_dataset=datasets["paired"], kl={"coef": 0.1},
                      **trl_fields(tmp_path))


def test_a_reference_model_for_a_reference_free_loss_is_refused(tiny_model_dir, tmp_path, datasets):
    from rlplug.trl.build import resolve_algorithm
    from rlplug.trl.dpo import RLPlugDPOTrainer

    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="uses no reference model"):
        RLPlugDPOTrainer(tiny_model_dir, reference, DPOConfig(**trl_fields(tmp_path)),
                         algorithm=resolve_algorithm("cpo"), train_dataset=datasets["paired"])


# ---- config class and parameter binding ----------------------------------------------------


def test_config_class_comes_from_the_adapter_and_beta_reaches_the_loss(tiny_model_dir, tmp_path, datasets):
    dpo = build_trainer("dpo", model=tiny_model_dir, train_dataset=datasets["paired"], beta=0.3,
                        **trl_fields(tmp_path))
    assert type(dpo.args) is DPOConfig and dpo.components.loss.params["beta"] == 0.3
    kto = build_trainer("kto", model=tiny_model_dir, train_dataset=datasets["unpaired"], desirable_weight=1.5,
                        **trl_fields(tmp_path))
    assert type(kto.args) is KTOConfig
    assert kto.components.loss.params == {"beta": 0.1, "desirable_weight": 1.5, "undesirable_weight": 1.0}
    simpo = build_trainer("simpo", model=tiny_model_dir, train_dataset=datasets["paired"], **trl_fields(tmp_path))
    assert simpo.components.loss.params == {"beta": 2.0}  # the recipe's config default; gamma keeps its default
    ipo = build_trainer("ipo", model=tiny_model_dir, train_dataset=datasets["paired"], beta=0.5,
                        component_params={"preference_loss": {"normalize_length": False}}, **trl_fields(tmp_path))
    assert ipo.components.loss.params == {
        "beta": 0.5, "normalize_length": False, "f_divergence_type": "reverse_kl", "f_alpha_divergence_coef": 0.5,
    }


# ---- short LoRA and QLoRA runs --------------------------------------------------------------


def check_short_run(trainer, steps, paired):
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == steps and len(history) == steps
    assert all(math.isfinite(entry["loss"]) for entry in history)
    names = {"rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "entropy"}
    if paired:
        names.add("rewards/accuracies")
    assert names <= set().union(*history)
    lora_b = [p for name, p in trainer.model.named_parameters() if "lora_B" in name]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "LoRA B starts at zero and must have moved"
    base = [p for name, p in trainer.model.named_parameters() if "lora_" not in name]
    assert not any(p.requires_grad for p in base)


@pytest.mark.parametrize("algorithm", ALL)
def test_short_lora_run(tiny_model_dir, tmp_path, datasets, algorithm):
    trainer = build_trainer(algorithm, model=tiny_model_dir, train_dataset=rows_for(algorithm, datasets),
                            peft_config=lora(), **trl_fields(tmp_path, max_steps=3, learning_rate=1e-2))
    trainer.train()
    check_short_run(trainer, 3, algorithm != "kto")


@pytest.mark.filterwarnings("ignore::UserWarning")  # bitsandbytes: no `kernels` package on CPU
@pytest.mark.parametrize("algorithm", ["dpo", "cpo", "kto"])
def test_short_qlora_run(tiny_model_dir, tmp_path, datasets, algorithm):
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=quantization, dtype=torch.float32)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    trainer = build_trainer(algorithm, model=model, train_dataset=rows_for(algorithm, datasets), peft_config=lora(),
                            **trl_fields(tmp_path, max_steps=2, learning_rate=1e-2))
    assert trainer.ref_model is None  # the reference is the 4-bit base with the adapter disabled
    trainer.train()
    check_short_run(trainer, 2, algorithm != "kto")


@pytest.mark.parametrize("algorithm", ["dpo", "simpo", "kto"])
def test_evaluate_logs_eval_metrics(tiny_model_dir, tmp_path, datasets, algorithm):
    rows = rows_for(algorithm, datasets)
    trainer = build_trainer(algorithm, model=tiny_model_dir, train_dataset=rows, eval_dataset=rows.select(range(16)),
                            peft_config=lora(), **trl_fields(tmp_path, per_device_eval_batch_size=8))
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"])
    assert {"eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/margins"} <= metrics.keys()


@pytest.mark.parametrize("algorithm", ["cpo", "kto"])
def test_return_outputs_gives_the_logits_as_trl_does(tiny_model_dir, tmp_path, datasets, algorithm):
    trainer = build_trainer(algorithm, model=tiny_model_dir, train_dataset=rows_for(algorithm, datasets),
                            **trl_fields(tmp_path))
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with pytest.warns(FutureWarning, match="extra forward pass"):
        loss, outputs = trainer.compute_loss(trainer.model, inputs, return_outputs=True)
    assert loss.dim() == 0 and outputs.logits.shape[:2] == inputs["input_ids"].shape


def test_changed_trl_internals_fail_at_construction(tiny_model_dir, tmp_path, datasets, monkeypatch):
    from trl import DPOTrainer

    from rlplug.trl.compat import TRLCompatibilityError
    from rlplug.trl.preference_common import check_trainer_attributes

    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", lambda self, batch: None)
    with pytest.raises(TRLCompatibilityError, match="compute_ref_log_probs takes"):
        build_trainer("dpo", model=tiny_model_dir, train_dataset=datasets["paired"], **trl_fields(tmp_path))
    with pytest.raises(TRLCompatibilityError, match="no longer sets ref_model, precompute_ref_logps"):
        check_trainer_attributes(object())
