"""What the registries cannot say about their entries: paper, knobs, tested properties.

One :class:`Family` per catalogued registry (keyed like ``_methods_ref.SOURCES``), one
:class:`Method` per registered name. The generator refuses a registered name without a
row here, a row for a name nobody registered, a knob that is not a spec field, and a
test reference that does not name a test function in the repository. So this table
cannot silently fall behind the code.

``summary`` is only for entries whose code carries no description of its own (a
docstring or a registry ``description``); where the code has one, the code's is used.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATALOGUE", "Family", "Method", "Tested"]


@dataclass(frozen=True)
class Tested:
    """A property the test suite checks: the claim and ``tests/<file>.py::<function>``."""

    claim: str
    test: str


@dataclass(frozen=True)
class Method:
    """One registered entry: its paper ('' for none), its own knobs (spec paths) beyond
    the family's shared ones, and the properties tests check on it specifically."""

    paper: str
    knobs: tuple[str, ...] = ()
    tested: tuple[Tested, ...] = ()
    summary: str = ""


@dataclass(frozen=True)
class Family:
    """Knobs and tested properties shared by every entry of one registry."""

    entries: dict[str, Method]
    knobs: tuple[str, ...] = ()
    tested: tuple[Tested, ...] = ()
    note: str = ""


_GROWTH = "tests/methods/test_growth_registry.py"
_NET2NET = "tests/methods/test_net2net.py"
_LEMON = "tests/methods/growth/test_lemon.py"
_MIXGROW = "tests/methods/growth/test_mixturegrowth.py"
_STACK = "tests/methods/growth/test_stack.py"
_BASELINES = "tests/methods/growth/test_baselines.py"
_ENGINE = "tests/trainables/test_engine.py"
_E2E = "tests/e2e/test_sweep_e2e.py"
_PRUNING = "tests/methods/test_pruning.py"
_PAI = "tests/methods/sparsity/test_pai_common.py"
_SIGPROP = "tests/methods/sparsity/test_pai_signal_prop.py"
_SNIP = "tests/methods/sparsity/test_pai_snip.py"
_GRASP = "tests/methods/sparsity/test_pai_grasp.py"
_SYNFLOW = "tests/methods/sparsity/test_pai_synflow.py"
_NTKSAP = "tests/methods/sparsity/test_pai_ntksap.py"
_UPDATER = "tests/methods/sparsity/test_updater.py"
_SPARSE_ENGINE = "tests/trainables/test_sparse_engine.py"
_GMP = "tests/methods/sparsity/test_gmp.py"
_SET = "tests/methods/sparsity/test_set.py"
_RIGL = "tests/methods/sparsity/test_rigl.py"
_SPARSE_DDP = "tests/e2e/test_sparse_ddp.py"
_GAN_BALANCE = "tests/methods/sparsity/test_gan_balance.py"
_GAN_MASKS = "tests/methods/sparsity/test_gan_masks.py"
_GAN_ENGINE = "tests/trainables/test_gan_engine.py"
_GAN_MODEL = "tests/methods/sparsity/test_gan_model.py"
_DISTRIBUTIONS = "tests/methods/test_layer_distributions.py"
_STRUCTURE = "tests/methods/sparsity/test_structure.py"
_EXPORT = "tests/methods/sparsity/test_export.py"
_SUPERNETS = "tests/methods/supernet/test_supernets.py"
_SANDWICH = "tests/methods/supernet/test_sandwich.py"
_SUPERNET_ENGINE = "tests/trainables/test_supernet_engine.py"
_NTK = "tests/methods/proxies/test_ntk.py"
_NASWOT = "tests/methods/proxies/test_naswot.py"
_PROXY_SYNFLOW = "tests/methods/proxies/test_synflow.py"
_SCORING = "tests/methods/proxies/test_scoring.py"
_FLOPS = "tests/test_flops.py"
_MACHINERY = "tests/searchers/test_search_machinery.py"
_SPACE = "tests/searchers/test_space.py"
_MO_ASHA = "tests/searchers/test_mo_asha.py"
_GROWTH_PBT = "tests/searchers/test_growth_pbt.py"
_TRANSITION = "tests/trainables/test_transition.py"
_SEARCH_E2E = "tests/e2e/test_search_sweeps.py"
_FAMILIES = "tests/models/test_families.py"
_MLP = "tests/models/test_mlp_model.py"
_MIXTURE = "tests/models/test_mixture_model.py"
_BUILTIN = "tests/data/test_builtin_datasets.py"
_FILES = "tests/data/test_file_datasets.py"
_TEXT = "tests/data/test_text_dataset.py"


def _t(claim: str, path: str, function: str) -> Tested:
    return Tested(claim, f"{path}::{function}")


# ----------------------------------------------------------------------------- growth

_NM = Method(
    paper="Zhou et al., Learning N:M Fine-grained Structured Sparse Neural Networks From "
    "Scratch, ICLR 2021; the 2:4 pattern of NVIDIA's sparse tensor cores",
    tested=(
        _t(
            "keeps exactly the top N of every group of M (property-based over shapes)",
            _STRUCTURE,
            "test_nm_keeps_the_top_n_of_every_group",
        ),
        _t(
            "groups run along the input dimension",
            _STRUCTURE,
            "test_nm_groups_run_along_the_input_dim",
        ),
        _t(
            "an input dimension not divisible by M is refused",
            _STRUCTURE,
            "test_nm_refuses_an_input_dim_not_divisible_by_m",
        ),
    ),
)

CATALOGUE: dict[str, Family] = {
    "growth": Family(
        knobs=(
            "growth.stages",
            "growth.at_fraction",
            "growth.timing",
            "growth.factor",
            "growth.depth_factor",
            "growth.lr_after",
            "growth.warmup_fraction",
            "growth.plan",
        ),
        tested=(
            _t(
                "reaches the target config, leaves the source untouched, keeps dtype, device "
                "and train/eval mode, is deterministic in the seed, and lists only verbatim "
                "copies as carried (every operator x every family it declares)",
                _GROWTH,
                "test_operator_conformance",
            ),
            _t(
                "a family it does not declare is refused with an error naming both",
                _GROWTH,
                "test_unsupported_family_is_refused_clearly",
            ),
            _t(
                "shrinking and task changes are refused",
                _GROWTH,
                "test_expand_rejects_shrinking_and_task_changes",
            ),
            _t(
                "a masked model is refused unless the operator grows masks for its family",
                _GROWTH,
                "test_masked_models_are_refused_unless_handled",
            ),
            _t(
                "where declared lossless: output change <= 1e-10 in float64, property-based "
                "over random shapes, indivisible widths and depth x2",
                _GROWTH,
                "test_lossless_operators_keep_the_function",
            ),
        ),
        entries={
            "net2net": Method(
                paper="Chen, Goodfellow, Shlens, Net2Net: Accelerating Learning via Knowledge "
                "Transfer, ICLR 2016",
                knobs=("growth.noise",),
                tested=(
                    _t(
                        "widening keeps the MLP's function in float64",
                        _NET2NET,
                        "test_widening_preserves_the_function_fp64",
                    ),
                    _t(
                        "a new unit copies an existing one and the outgoing weights are split",
                        _NET2NET,
                        "test_new_units_copy_an_existing_unit_and_outgoing_weights_split",
                    ),
                    _t(
                        "every CNN replica gets the BatchNorm parameters and statistics",
                        _NET2NET,
                        "test_every_cnn_replica_gets_batchnorm_parameters_and_statistics",
                    ),
                    _t(
                        "deepening inserts an identity layer",
                        _NET2NET,
                        "test_deepening_inserts_an_identity_layer",
                    ),
                    _t(
                        "a sparse MLP keeps its function and its masks grow with it",
                        _NET2NET,
                        "test_widening_a_sparse_model_preserves_function_and_masks",
                    ),
                    _t(
                        "noise breaks replica symmetry and keeps the function approximately",
                        _NET2NET,
                        "test_noise_breaks_symmetry_and_keeps_the_function_approximately",
                    ),
                ),
            ),
            "lemon": Method(
                paper="Wang et al., LEMON: Lossless model expansion, ICLR 2024",
                knobs=("growth.new_block", "growth.placement"),
                tested=(
                    _t("lossless on the MLP", _LEMON, "test_mlp_growth_is_lossless"),
                    _t("lossless on the CNN", _LEMON, "test_cnn_growth_is_lossless"),
                    _t("lossless on the ViT", _LEMON, "test_vit_growth_is_lossless"),
                    _t("lossless on the GPT", _LEMON, "test_gpt_growth_is_lossless"),
                    _t(
                        "appended LayerNorm positions output exactly zero",
                        _LEMON,
                        "test_layer_norm_appended_positions_output_exactly_zero",
                    ),
                    _t(
                        "replicas are asymmetric: they differ after one training step",
                        _LEMON,
                        "test_replicas_of_the_first_layer_differ_after_one_step",
                    ),
                    _t(
                        "new blocks have zero residual branches",
                        _LEMON,
                        "test_new_blocks_have_zero_residual_branches",
                    ),
                    _t(
                        "inside a trial, growth keeps the function",
                        _ENGINE,
                        "test_lemon_growth_in_the_engine_keeps_the_function",
                    ),
                    _t(
                        "a 2-worker DDP ViT trial grows wider and deeper and resumes from "
                        "its checkpoint",
                        _E2E,
                        "test_two_worker_lemon_vit_grows_wider_and_deeper_and_resumes_from_its_checkpoint",
                    ),
                ),
            ),
            "mixturegrowth": Method(
                paper="Pham et al., MixtureGrowth: Growing Neural Networks by Recombining "
                "Learned Parameters, WACV 2024",
                knobs=("growth.coefficients", "growth.noise", "model.templates"),
                tested=(
                    _t(
                        "registered for the mixture family only",
                        _MIXGROW,
                        "test_registered_for_the_mixture_family_only",
                    ),
                    _t(
                        "the diagonal blocks keep each member's mixture; the rest is copied",
                        _MIXGROW,
                        "test_diagonal_blocks_keep_each_members_mixture_and_the_rest_is_copied",
                    ),
                    _t(
                        "orthogonal coefficients are orthogonal to the old ones",
                        _MIXGROW,
                        "test_orthogonal_coefficients_are_orthogonal_to_the_old_ones",
                    ),
                    _t(
                        "zero coefficients give the sum of the members' logits plus one bias",
                        _MIXGROW,
                        "test_zero_coefficients_give_the_sum_of_the_members_logits_plus_one_bias",
                    ),
                    _t(
                        "the grown model trains and its new blocks learn",
                        _MIXGROW,
                        "test_the_grown_model_trains_and_its_new_blocks_learn",
                    ),
                ),
            ),
            "stack": Method(
                paper="Du et al., Stacking Your Transformers: A Closer Look at Model Growth "
                "for Efficient LLM Pre-Training, NeurIPS 2024 (G_stack)",
                knobs=("growth.pattern",),
                tested=(
                    _t(
                        "grown layers are bitwise copies in the chosen pattern",
                        _STACK,
                        "test_grown_layers_are_bitwise_copies_in_the_pattern",
                    ),
                    _t(
                        "the grown model runs the source blocks in the pattern",
                        _STACK,
                        "test_grown_model_runs_the_source_blocks_in_the_pattern",
                    ),
                    _t(
                        "the timing formula reproduces the paper's published table",
                        _STACK,
                        "test_formula_reproduces_the_published_table",
                    ),
                    _t(
                        "inside a trial, `timing: gstack` grows where the formula says",
                        _ENGINE,
                        "test_gstack_timing_places_growth_by_the_formula",
                    ),
                ),
            ),
            "random": Method(
                paper="baseline (G_random in Du et al., NeurIPS 2024)",
                tested=(
                    _t(
                        "the source sits in the leading slices of the grown tensors",
                        _BASELINES,
                        "test_source_sits_in_the_leading_slices",
                    ),
                    _t(
                        "seeded, with the family's default init scale",
                        _BASELINES,
                        "test_random_is_seeded_and_uses_the_default_scale",
                    ),
                    _t("it changes the function", _BASELINES, "test_random_changes_the_function"),
                ),
            ),
            "zero": Method(
                paper="baseline (G_zero in Du et al., NeurIPS 2024)",
                tested=(
                    _t(
                        "the source sits in the leading slices of the grown tensors",
                        _BASELINES,
                        "test_source_sits_in_the_leading_slices",
                    ),
                    _t(
                        "lossless on the CNN in eval and train mode",
                        _BASELINES,
                        "test_zero_is_lossless_on_cnn_in_eval_and_train_mode",
                    ),
                    _t(
                        "keeps the function exactly for the targets where zeros must (and "
                        "only those)",
                        _BASELINES,
                        "test_zero_keeps_the_function_exactly_where_it_should",
                    ),
                ),
            ),
        },
    ),
    # ------------------------------------------------------------------------ sparsity
    "pruning": Family(
        knobs=(
            "sparsity.density",
            "sparsity.distribution",
            "sparsity.erk_power",
            "sparsity.scope",
            "sparsity.structure",
            "sparsity.iterations",
            "sparsity.schedule",
            "sparsity.init",
            "sparsity.isometry_steps",
            "sparsity.isometry_lr",
        ),
        tested=(
            _t(
                "exact kept count in every layer under uniform, ER and ERK, masks applied",
                _PRUNING,
                "test_exact_count_per_layer_and_masks_applied",
            ),
            _t(
                "global scope keeps exactly round(density x N) entries",
                _PAI,
                "test_global_scope_keeps_exactly_round_density_n",
            ),
            _t(
                "iterative masks are nested and follow the schedule",
                _PAI,
                "test_iterative_masks_are_nested_and_follow_the_schedule",
            ),
            _t(
                "the same seed and weights give the same masks",
                _PRUNING,
                "test_same_seed_and_weights_give_the_same_masks",
            ),
            _t(
                "pruned entries stay exactly zero after optimizer steps",
                _PRUNING,
                "test_apply_after_optimizer_step_keeps_pruned_entries_exactly_zero",
            ),
            _t(
                "masks survive a state_dict round trip into a fresh model",
                _PRUNING,
                "test_masks_survive_a_state_dict_round_trip_into_a_fresh_model",
            ),
            _t(
                "signal propagation: approximate-isometry repair fixes what SNIP breaks "
                "without touching the masks",
                _SIGPROP,
                "test_snip_breaks_isometry_and_ai_repairs_it_without_touching_the_masks",
            ),
        ),
        entries={
            "random": Method(
                paper="Liu et al., The Unreasonable Effectiveness of Random Pruning, ICLR 2022",
                tested=(
                    _t(
                        "different seeds give different masks",
                        _PRUNING,
                        "test_random_masks_differ_between_seeds",
                    ),
                ),
            ),
            "magnitude": Method(
                paper="Han et al., Learning both Weights and Connections for Efficient Neural "
                "Networks, NeurIPS 2015",
                tested=(
                    _t(
                        "keeps the largest weights of each layer",
                        _PRUNING,
                        "test_magnitude_keeps_the_largest_weights_per_layer",
                    ),
                ),
            ),
            "snip": Method(
                paper="Lee, Ajanthan, Torr, SNIP: Single-shot Network Pruning based on "
                "Connection Sensitivity, ICLR 2019",
                knobs=("sparsity.samples_per_class", "sparsity.labels"),
                tested=(
                    _t(
                        "the score equals the normalised derivative of the loss by a mask gate "
                        "at one",
                        _SNIP,
                        "test_snip_equals_the_normalised_gate_derivative_at_one",
                    ),
                    _t(
                        "the global mask equals torch.nn.utils.prune's on the same scores",
                        _SNIP,
                        "test_global_snip_mask_equals_torch_prune_global_unstructured",
                    ),
                    _t(
                        "uniform labels ignore the targets",
                        _SNIP,
                        "test_uniform_labels_ignore_the_targets",
                    ),
                ),
            ),
            "grasp": Method(
                paper="Wang, Zhang, Grosse, Picking Winning Tickets Before Training by "
                "Preserving Gradient Flow, ICLR 2020",
                knobs=("sparsity.samples_per_class", "sparsity.temperature"),
                tested=(
                    _t(
                        "the Hessian-gradient product matches a central finite difference",
                        _GRASP,
                        "test_hg_matches_a_central_finite_difference",
                    ),
                    _t(
                        "keeps the largest signed scores",
                        _GRASP,
                        "test_grasp_keeps_the_largest_signed_scores",
                    ),
                    _t(
                        "leaves the model and its gradients untouched",
                        _GRASP,
                        "test_grasp_leaves_the_model_and_grads_untouched",
                    ),
                ),
            ),
            "synflow": Method(
                paper="Tanaka, Kunin, Yamins, Ganguli, Pruning neural networks without any "
                "data by iteratively conserving synaptic flow, NeurIPS 2020",
                knobs=("sparsity.float64",),
                tested=(
                    _t(
                        "conservation: every layer's scores sum to R (float64)",
                        _SYNFLOW,
                        "test_every_layer_score_sums_to_r_in_fp64",
                    ),
                    _t(
                        "scores do not depend on any data",
                        _SYNFLOW,
                        "test_scores_are_independent_of_any_data",
                    ),
                    _t(
                        "iterative SynFlow keeps every layer where SNIP collapses one",
                        _SYNFLOW,
                        "test_iterative_synflow_keeps_every_layer_where_snip_collapses",
                    ),
                    _t(
                        "state and modes are restored bitwise on a BatchNorm CNN",
                        _SYNFLOW,
                        "test_state_and_modes_are_restored_bitwise_on_a_batchnorm_cnn",
                    ),
                ),
            ),
            "ntk_sap": Method(
                paper="Wang, Li, Sun, NTK-SAP: Improving Neural Network Pruning by Aligning "
                "Training Dynamics, ICLR 2023",
                knobs=("sparsity.epsilon", "sparsity.ntk_samples"),
                tested=(
                    _t(
                        "the finite-difference estimate matches the exact Jacobian norm",
                        _NTKSAP,
                        "test_fd_estimate_matches_the_exact_jacobian_norm",
                    ),
                    _t(
                        "weights, state, modes, momenta and the global RNG are restored bitwise",
                        _NTKSAP,
                        "test_weights_state_modes_momenta_and_global_rng_are_restored_bitwise",
                    ),
                    _t(
                        "scores depend on the seed, not on the initial weights, and need no data",
                        _NTKSAP,
                        "test_scores_depend_on_the_seed_not_on_theta0_and_need_no_data",
                    ),
                ),
            ),
        },
    ),
    "sparse_training": Family(
        knobs=("sparsity.density", "sparsity.distribution", "sparsity.erk_power"),
        tested=(
            _t(
                "initial masks have exact counts and are applied",
                _UPDATER,
                "test_initial_masks_have_exact_counts_and_are_applied",
            ),
            _t(
                "the same seed gives the same run",
                _UPDATER,
                "test_the_same_seed_gives_the_same_run",
            ),
            _t(
                "an update off the schedule changes nothing",
                _UPDATER,
                "test_update_is_a_no_op_off_schedule",
            ),
            _t(
                "masks and updater state survive a checkpoint",
                _UPDATER,
                "test_masks_and_state_survive_a_checkpoint",
            ),
            _t(
                "inside a trial, the density is exact after training",
                _SPARSE_ENGINE,
                "test_density_exact_after_training",
            ),
            _t(
                "inside a trial, masks survive checkpoint and resume",
                _SPARSE_ENGINE,
                "test_masks_survive_checkpoint_and_resume",
            ),
        ),
        entries={
            "gmp": Method(
                paper="Zhu & Gupta, To prune, or not to prune: exploring the efficacy of "
                "pruning for model compression, 2017",
                tested=(
                    _t(
                        "the cubic schedule equals torch.ao's `CubicSL` on its grid, exact "
                        "at its ends and held between grid points",
                        _GMP,
                        "test_cubic_schedule_equals_cubicsl_on_the_grid",
                    ),
                    _t(
                        "local uniform masks are nested on the grid and exact",
                        _GMP,
                        "test_local_uniform_masks_are_nested_on_grid_and_exact",
                    ),
                    _t(
                        "global scope keeps the global top magnitudes",
                        _GMP,
                        "test_global_scope_keeps_the_global_top_magnitudes",
                    ),
                    _t(
                        "inside a trial, density decreases monotonically to the target",
                        _SPARSE_ENGINE,
                        "test_gmp_density_decreases_monotonically_to_the_target",
                    ),
                ),
            ),
            "set": Method(
                paper="Mocanu et al., Scalable training of artificial neural networks with "
                "adaptive sparse connectivity inspired by network science, Nature "
                "Communications 2018",
                tested=(
                    _t(
                        "counts are kept and masks change on the schedule only",
                        _SET,
                        "test_training_keeps_counts_and_changes_masks_on_schedule_only",
                    ),
                    _t(
                        "regrowth is uniform over the entries outside the kept set",
                        _SET,
                        "test_regrowth_is_uniform_over_the_entries_outside_the_kept_set",
                    ),
                    _t(
                        "the magnitude-and-sign rule drops each sign separately",
                        _SET,
                        "test_magnitude_and_sign_rule_drops_each_sign_separately",
                    ),
                    _t(
                        "regrown entries start with zero Adam moments; kept entries keep "
                        "their weights",
                        _SET,
                        "test_new_entries_and_their_adam_state",
                    ),
                ),
            ),
            "rigl": Method(
                paper="Evci, Gale, Menick, Castro, Elsen, Rigging the Lottery: Making All "
                "Tickets Winners, ICML 2020",
                tested=(
                    _t(
                        "every update follows RigL's drop and grow rules (SGD and Adam)",
                        _RIGL,
                        "test_every_update_matches_the_rigl_rules",
                    ),
                    _t(
                        "the end step is exclusive and step 0 never updates",
                        _RIGL,
                        "test_end_is_exclusive_and_step_zero_never_updates",
                    ),
                    _t(
                        "trains digits at the exact density",
                        _RIGL,
                        "test_rigl_trains_digits_at_exact_density",
                    ),
                    _t(
                        "a 2-worker DDP trial keeps its masks identical on both ranks",
                        "tests/e2e/test_examples_run.py",
                        "test_sparsity_rigl_keeps_its_two_ddp_ranks_identical",
                    ),
                ),
            ),
        },
    ),
    "gan": Family(
        knobs=(
            "sparsity.density",
            "sparsity.d_density",
            "sparsity.update_interval",
            "sparsity.drop_fraction",
        ),
        tested=(
            _t(
                "the balance ratio matches a hand computation exactly",
                _GAN_BALANCE,
                "test_balance_ratio_matches_a_hand_computation_exactly",
            ),
            _t(
                "the generator's drop and grow is RigL with global scope",
                _GAN_MASKS,
                "test_gradient_drop_and_grow_is_rigl_with_global_scope",
            ),
            _t(
                "engines with the same seed build and train identical masks",
                _GAN_ENGINE,
                "test_engines_with_the_same_seed_build_and_train_identical_masks",
            ),
        ),
        note="Both train a `model.family: gan` model (a generator and a discriminator).",
        entries={
            "gan_single": Method(
                paper="Wang, Wu, Hovakimyan, Sun, Balanced Training for Sparse GANs, "
                "NeurIPS 2023 (single dynamic sparse training)",
                summary="A dynamic sparse generator (global magnitude drop, dense-gradient "
                "growth) against a discriminator with a static sparse mask.",
                tested=(
                    _t(
                        "the generator's nonzero count is constant across its updates and "
                        "the discriminator stays static",
                        _GAN_ENGINE,
                        "test_generator_nnz_is_constant_across_its_updates_and_sdst_keeps_d_static",
                    ),
                ),
            ),
            "gan_double": Method(
                paper="Wang, Wu, Hovakimyan, Sun, Balanced Training for Sparse GANs, "
                "NeurIPS 2023 (double dynamic sparse training)",
                knobs=(
                    "sparsity.balance_lower",
                    "sparsity.balance_upper",
                    "sparsity.d_interval",
                    "sparsity.d_step",
                    "sparsity.d_cap",
                ),
                summary="As `gan_single`, and the discriminator's density follows the "
                "balance ratio: up when it is at or above the band, down when at or below.",
                tested=(
                    _t(
                        "scripted balance ratios move the density by exactly the step",
                        _GAN_BALANCE,
                        "test_scripted_balance_ratios_move_the_density_by_exactly_the_step",
                    ),
                    _t(
                        "inside a trial, the discriminator's density follows a scripted ratio",
                        _GAN_ENGINE,
                        "test_d_density_follows_a_scripted_balance_ratio",
                    ),
                    _t(
                        "a 2-worker DDP trial adapts both densities identically on both ranks",
                        _SPARSE_DDP,
                        "test_two_worker_sparse_gan_adapts_densities_identically",
                    ),
                ),
            ),
        },
    ),
    "distribution": Family(
        knobs=("sparsity.density",),
        tested=(
            _t(
                "per-layer counts meet the budget within one",
                _DISTRIBUTIONS,
                "test_counts_meet_the_budget_within_one",
            ),
            _t(
                "every layer keeps at least one entry",
                _DISTRIBUTIONS,
                "test_counts_keep_at_least_one_per_layer",
            ),
        ),
        entries={
            "uniform": Method(
                paper="",
                summary="Every layer gets the same density.",
                tested=(
                    _t(
                        "gives equal densities (property-based)",
                        _DISTRIBUTIONS,
                        "test_uniform_gives_equal_densities",
                    ),
                ),
            ),
            "er": Method(
                paper="Erdős-Rényi, as in Mocanu et al., Nature Communications 2018 (SET)",
                summary="Density proportional to `(n_in + n_out) / (n_in * n_out)`.",
                tested=(
                    _t(
                        "uses the first two dimensions (property-based)",
                        _DISTRIBUTIONS,
                        "test_er_uses_the_first_two_dims",
                    ),
                ),
            ),
            "erk": Method(
                paper="Erdős-Rényi-Kernel, Evci et al., ICML 2020 (RigL)",
                knobs=("sparsity.erk_power",),
                summary="Density proportional to `(sum of dims / product of dims) ** p`, "
                "layers that would exceed 1 capped at dense and the rest re-solved.",
                tested=(
                    _t(
                        "ratios, caps, monotonicity and the budget hold (property-based)",
                        _DISTRIBUTIONS,
                        "test_erk_ratios_caps_monotonicity_and_budget",
                    ),
                    _t(
                        "the small first layer is capped",
                        _DISTRIBUTIONS,
                        "test_erk_caps_the_small_first_layer",
                    ),
                    _t(
                        "identical for OIHW and HWIO kernel layouts",
                        _DISTRIBUTIONS,
                        "test_erk_is_identical_for_oihw_and_hwio",
                    ),
                ),
            ),
        },
    ),
    "structure": Family(
        knobs=("sparsity.scope",),
        note="Structures other than `unstructured` need `sparsity.scope: local`.",
        entries={
            "unstructured": Method(
                paper="",
                tested=(
                    _t(
                        "is the plain top-k",
                        _STRUCTURE,
                        "test_unstructured_is_the_plain_topk",
                    ),
                ),
            ),
            "channel": Method(
                paper="structured (filter) pruning, e.g. Li et al., Pruning Filters for "
                "Efficient ConvNets, ICLR 2017",
                tested=(
                    _t(
                        "keeps whole rows with the highest summed scores",
                        _STRUCTURE,
                        "test_channel_keeps_whole_rows_with_the_highest_sums",
                    ),
                    _t("masks whole conv filters", _STRUCTURE, "test_channel_masks_conv_filters"),
                    _t(
                        "iterative pruning keeps whole rows",
                        _PAI,
                        "test_channel_structure_keeps_whole_rows_under_iteration",
                    ),
                ),
            ),
            "1:2": _NM,
            "2:4": _NM,
            "1:4": _NM,
            "4:8": _NM,
        },
    ),
    # ---------------------------------------------------------------- supernets, proxies
    "supernet": Family(
        note="A trial trains a supernet when `supernet.enabled: true`; `model.family` picks "
        "which, and the `model` section gives its largest subnet.",
        knobs=(
            "supernet.enabled",
            "supernet.width_choices",
            "supernet.depth_choices",
            "supernet.sampling",
            "supernet.n_random",
            "supernet.kd_weight",
            "supernet.temperature",
            "supernet.recalibration_batches",
        ),
        tested=(
            _t(
                "an extracted subnet computes exactly the active supernet (1e-6) and has the "
                "analytic params and FLOPs",
                _SUPERNETS,
                "test_extracted_subnets_equal_the_supernet",
            ),
            _t("the largest subnet is the full net", _SUPERNETS, "test_max_subnet_is_the_full_net"),
            _t(
                "nested (SortedNet) sub-models are prefixes of each other",
                _SUPERNETS,
                "test_nested_sub_models_are_prefixes",
            ),
            _t(
                "values outside the space are refused",
                _SUPERNETS,
                "test_set_active_refuses_values_outside_the_space",
            ),
            _t(
                "sandwich steps accumulate the sum of the children's gradients",
                _SANDWICH,
                "test_accumulated_gradient_is_the_sum_of_child_gradients",
            ),
            _t(
                "a supernet sweep then a subnet search end to end (the supernet examples)",
                "tests/e2e/test_examples_run.py",
                "test_example_runs_at_a_tiny_budget",
            ),
        ),
        entries={
            "mlp": Method(
                paper="sandwich rule and in-place distillation: Yu et al., BigNAS, ECCV 2020",
                tested=(
                    _t(
                        "matches a hand-sliced forward pass",
                        _SUPERNETS,
                        "test_mlp_supernet_matches_a_hand_sliced_forward",
                    ),
                    _t(
                        "sandwich training on digits improves the largest and the smallest",
                        _SANDWICH,
                        "test_sandwich_training_on_digits_improves_largest_and_smallest_mlp",
                    ),
                ),
            ),
            "cnn": Method(
                paper="Cai et al., Once-for-All: Train One Network and Specialize it for "
                "Efficient Deployment, ICLR 2020",
                knobs=("supernet.kernel_choices",),
                tested=(
                    _t(
                        "the kernel is the centre crop and BatchNorm the first channels",
                        _SUPERNETS,
                        "test_cnn_kernel_is_the_centre_crop_and_bn_the_first_channels",
                    ),
                    _t(
                        "BatchNorm recalibration is identical in the supernet and the "
                        "extracted model",
                        _SUPERNETS,
                        "test_cnn_bn_recalibration_is_identical_in_supernet_and_extracted_model",
                    ),
                    _t(
                        "inside a trial, an elastic-kernel supernet trains",
                        _SUPERNET_ENGINE,
                        "test_cnn_supernet_with_elastic_kernel_trains",
                    ),
                ),
            ),
            "vit": Method(
                paper="Chen et al., AutoFormer: Searching Transformers for Visual Recognition, "
                "ICCV 2021",
                knobs=("supernet.heads_choices", "supernet.mlp_ratio_choices"),
                tested=(
                    _t(
                        "its space is depth, heads and MLP ratio",
                        _SUPERNETS,
                        "test_registry_and_spaces",
                    ),
                ),
            ),
        },
    ),
    "proxy": Family(
        knobs=(
            "search.proxy_filter.proxy",
            "search.proxy_filter.fraction",
            "search.proxy_filter.warmup",
            "search.proxy_filter.batch_size",
        ),
        tested=(
            _t(
                "deterministic under a seed; the model's state is restored",
                _SCORING,
                "test_deterministic_under_a_seed_and_state_restored",
            ),
            _t(
                "random draws come from the seed, not the global RNG",
                _SCORING,
                "test_random_draws_come_from_the_seed_not_the_global_rng",
            ),
            _t(
                "as a sweep filter, only candidates that pass the proxy train",
                "tests/e2e/test_proxy_filter_sweep.py",
                "test_sweep_trains_only_candidates_that_pass_the_proxy",
            ),
        ),
        entries={
            "ntk_cond": Method(
                paper="Chen, Gong, Wang, Neural Architecture Search on ImageNet in Four GPU "
                "Hours: A Theoretically Inspired Perspective (TE-NAS), ICLR 2021",
                tested=(
                    _t(
                        "the Gram matrix is symmetric PSD and kappa >= 1",
                        _NTK,
                        "test_gram_symmetric_psd_and_kappa_at_least_one",
                    ),
                    _t(
                        "kappa is invariant to the batch order",
                        _NTK,
                        "test_kappa_invariant_to_batch_permutation",
                    ),
                    _t("the proxy is -ln kappa", _NTK, "test_proxy_is_minus_log_kappa"),
                ),
            ),
            "naswot": Method(
                paper="Mellor, Turner, Storkey, Crowley, Neural Architecture Search without "
                "Training, ICML 2021",
                tested=(
                    _t(
                        "the kernel is units minus Hamming distance, exactly",
                        _NASWOT,
                        "test_kernel_is_units_minus_hamming_exactly",
                    ),
                    _t(
                        "the kernel is symmetric PSD and the score permutation invariant",
                        _NASWOT,
                        "test_kernel_symmetric_psd_and_score_permutation_invariant",
                    ),
                    _t(
                        "a singular kernel scores minus infinity",
                        _NASWOT,
                        "test_singular_kernels_score_minus_infinity",
                    ),
                ),
            ),
            "synflow": Method(
                paper="Tanaka, Kunin, Yamins, Ganguli, NeurIPS 2020 (as a zero-cost proxy: "
                "Abdelfattah et al., Zero-Cost Proxies for Lightweight NAS, ICLR 2021)",
                tested=(
                    _t(
                        "the proxy is the log of the summed layer scores",
                        _PROXY_SYNFLOW,
                        "test_proxy_is_log_of_summed_layer_scores",
                    ),
                    _t(
                        "conservation: the total is layers x R",
                        _PROXY_SYNFLOW,
                        "test_conservation_total_is_layers_times_r",
                    ),
                    _t(
                        "data-free, and the state is restored",
                        _PROXY_SYNFLOW,
                        "test_data_free_and_state_restored",
                    ),
                ),
            ),
            "params": Method(
                paper="baseline",
                tested=(
                    _t(
                        "a built model's parameter count equals the analytic one",
                        _FLOPS,
                        "test_model_cost_of_a_built_mlp_equals_the_analytic_cost",
                    ),
                ),
            ),
            "flops": Method(
                paper="baseline",
                tested=(
                    _t(
                        "analytic FLOPs match torch's FlopCounterMode (minus bias adds)",
                        _FLOPS,
                        "test_flops_match_flop_counter_mode_minus_bias_adds",
                    ),
                ),
            ),
        },
    ),
    # -------------------------------------------------------------------------- search
    "sampler": Family(
        knobs=("search.sampler.seed",),
        tested=(
            _t(
                "builds from a spec and proposes configurations inside the space",
                _MACHINERY,
                "test_every_sampler_builds_and_proposes_inside_the_space",
            ),
            _t(
                "a conditional knob exists only when its parent allows it",
                _SPACE,
                "test_conditional_knobs_exist_only_when_their_parent_allows",
            ),
            _t(
                "no infeasible configuration is ever proposed under constraints",
                _MACHINERY,
                "test_no_infeasible_config_is_ever_proposed",
            ),
        ),
        entries={
            "tpe": Method(
                paper="Bergstra, Bardenet, Bengio, Kégl, Algorithms for Hyper-Parameter "
                "Optimization, NeurIPS 2011 (Optuna's TPESampler)",
                summary="Tree-structured Parzen estimator; multivariate and grouped by "
                "default, so conditional knobs are modelled together.",
                tested=(
                    _t(
                        "its knobs reach Optuna",
                        _MACHINERY,
                        "test_sampler_knobs_reach_optuna",
                    ),
                ),
            ),
            "random": Method(
                paper="Bergstra & Bengio, Random Search for Hyper-Parameter Optimization, "
                "JMLR 2012",
                summary="Independent uniform draws (log-uniform where the knob says `log`).",
            ),
            "cmaes": Method(
                paper="Hansen & Ostermeier, Completely Derandomized Self-Adaptation in "
                "Evolution Strategies, 2001 (Optuna's CmaEsSampler, IPOP/BIPOP restarts)",
                summary="CMA evolution strategy over the numeric knobs.",
            ),
            "gp": Method(
                paper="Gaussian-process Bayesian optimisation (Optuna's GPSampler)",
                summary="Gaussian-process Bayesian optimisation.",
            ),
            "nsga2": Method(
                paper="Deb, Pratap, Agarwal, Meyarivan, A fast and elitist multiobjective "
                "genetic algorithm: NSGA-II, IEEE TEC 2002",
                summary="Genetic algorithm with non-dominated sorting and crowding distance.",
                tested=(
                    _t(
                        "its knobs reach Optuna",
                        _MACHINERY,
                        "test_sampler_knobs_reach_optuna",
                    ),
                ),
            ),
            "nsga3": Method(
                paper="Deb & Jain, An Evolutionary Many-Objective Optimization Algorithm "
                "Using Reference-Point-Based Nondominated Sorting, IEEE TEC 2014",
                summary="NSGA-II with reference points, for three or more objectives.",
            ),
            "qmc": Method(
                paper="quasi-Monte Carlo sequences (Sobol, Halton; Optuna's QMCSampler)",
                summary="Low-discrepancy sequences that cover the space evenly.",
            ),
            "grid": Method(
                paper="",
                summary="Every combination: each categorical choice, each int, each float "
                "step (every searched float needs a `step`).",
                tested=(
                    _t(
                        "enumerates every value of the space",
                        _MACHINERY,
                        "test_grid_enumerates_every_value",
                    ),
                ),
            ),
        },
    ),
    "scheduler": Family(
        tested=(
            _t(
                "builds from a spec and pickles (Tune checkpoints schedulers)",
                _MACHINERY,
                "test_every_scheduler_builds_from_a_spec",
            ),
        ),
        entries={
            "fifo": Method(
                paper="",
                summary="No early stopping: every trial runs its whole budget.",
            ),
            "asha": Method(
                paper="Li et al., A System for Massively Parallel Hyperparameter Tuning, "
                "MLSys 2020",
                summary="Asynchronous successive halving (Tune's ASHAScheduler).",
                tested=(
                    _t(
                        "a sweep under ASHA runs every trial and records failures",
                        _E2E,
                        "test_sweep_runs_all_trials_and_records_failures",
                    ),
                ),
            ),
            "hyperband": Method(
                paper="Li et al., Hyperband: A Novel Bandit-Based Approach to Hyperparameter "
                "Optimization, JMLR 2018",
                summary="Synchronous successive halving over brackets (Tune's HyperBandScheduler).",
            ),
            "median": Method(
                paper="Golovin et al., Google Vizier, KDD 2017 (median stopping rule)",
                summary="Stops a trial whose result falls below the median of the others "
                "at the same step.",
            ),
            "pbt": Method(
                paper="Jaderberg et al., Population Based Training of Neural Networks, 2017",
                summary="Population Based Training over the searched keys (Tune's "
                "PopulationBasedTraining).",
                tested=(
                    _t(
                        "its mutations follow the search space",
                        _MACHINERY,
                        "test_pbt_mutations_follow_the_space",
                    ),
                ),
            ),
            "growth-pbt": Method(
                paper="ours: PBT (Jaderberg et al., 2017) whose explore step grows the copied "
                "model function-preservingly or prunes it to a lower density",
                summary="PBT whose explore step may widen or deepen the copied model "
                "(function-preserving grow) or lower its density (prune and regrow).",
                tested=(
                    _t(
                        "explore applies both moves and records them",
                        _GROWTH_PBT,
                        "test_explore_applies_both_moves_and_records_them",
                    ),
                    _t(
                        "the grown copy predicts what the donor did (to 1e-5) and trains on",
                        _TRANSITION,
                        "test_growth_keeps_the_donor_function_and_training_continues",
                    ),
                    _t(
                        "a sweep grows copied models end to end",
                        _SEARCH_E2E,
                        "test_growth_pbt_sweep_grows_copied_models",
                    ),
                ),
            ),
            "mo-asha": Method(
                paper="Schmucker, Donini, Zafar, Salinas, Archambeau, Multi-objective "
                "Asynchronous Successive Halving, 2021",
                summary="Asynchronous successive halving whose promotions rank a rung by "
                "non-dominated sorting, then crowding distance.",
                tested=(
                    _t(
                        "at a full rung a dominated trial stops and a non-dominated one continues",
                        _MO_ASHA,
                        "test_dominated_trial_at_a_full_rung_stops_and_a_non_dominated_one_continues",
                    ),
                    _t(
                        "promotes ceil(n / reduction_factor) when all arrive in order",
                        _MO_ASHA,
                        "test_promoted_count_is_ceil_n_over_rf_when_all_arrive_in_order",
                    ),
                    _t(
                        "a restored run keeps its rungs through the state callback",
                        _MO_ASHA,
                        "test_restored_run_keeps_the_rungs_through_the_state_callback",
                    ),
                    _t(
                        "a multi-objective sweep respects its budget and returns a front",
                        _SEARCH_E2E,
                        "test_multi_objective_sweep_respects_the_budget_and_returns_a_front",
                    ),
                ),
            ),
        },
    ),
    # ------------------------------------------------------------------ models and data
    "model": Family(
        knobs=("model.width", "model.depth"),
        tested=(
            _t(
                "every registered family round-trips exactly through the sparse export format",
                _EXPORT,
                "test_every_registered_family_round_trips",
            ),
        ),
        entries={
            "mlp": Method(
                paper="",
                tested=(
                    _t(
                        "ReLU between layers, not after the last",
                        _MLP,
                        "test_forward_is_relu_between_layers_not_after_last",
                    ),
                    _t(
                        "a digits MLP reaches high accuracy",
                        _ENGINE,
                        "test_digits_mlp_reaches_high_accuracy",
                    ),
                ),
            ),
            "cnn": Method(
                paper="He, Zhang, Ren, Sun, Deep Residual Learning for Image Recognition, "
                "CVPR 2016 (BasicBlock)",
                knobs=("model.stages",),
                tested=(
                    _t(
                        "analytic FLOPs match torch's FlopCounterMode",
                        _FAMILIES,
                        "test_cnn_flops_match_the_flop_counter",
                    ),
                    _t("trains and improves", _ENGINE, "test_every_family_trains_and_improves"),
                ),
            ),
            "vit": Method(
                paper="Dosovitskiy et al., An Image is Worth 16x16 Words: Transformers for "
                "Image Recognition at Scale, ICLR 2021",
                knobs=("model.head_dim", "model.mlp_ratio", "model.patch_size"),
                tested=(
                    _t(
                        "analytic FLOPs match torch's FlopCounterMode",
                        _FAMILIES,
                        "test_transformer_flops_match_the_flop_counter",
                    ),
                    _t("trains and improves", _ENGINE, "test_every_family_trains_and_improves"),
                ),
            ),
            "gpt": Method(
                paper="Radford et al., Language Models are Unsupervised Multitask Learners "
                "(GPT-2), 2019",
                knobs=("model.head_dim", "model.mlp_ratio"),
                tested=(
                    _t("is causal", _FAMILIES, "test_gpt_is_causal"),
                    _t("trains and improves", _ENGINE, "test_every_family_trains_and_improves"),
                ),
            ),
            "gan": Method(
                paper="Goodfellow et al., Generative Adversarial Nets, NeurIPS 2014",
                tested=(
                    _t(
                        "its cost counts one pass of each network",
                        _GAN_MODEL,
                        "test_cost_counts_one_pass_of_each_network",
                    ),
                ),
            ),
            "mixture": Method(
                paper="Pham et al., MixtureGrowth, WACV 2024",
                knobs=("model.templates",),
                tested=(
                    _t(
                        "the forward pass is the sum of two member MLPs plus one bias",
                        _MIXTURE,
                        "test_forward_is_the_sum_of_two_member_mlps_plus_one_bias",
                    ),
                    _t(
                        "members are coupled after growth",
                        _MIXTURE,
                        "test_members_are_coupled_after_growth",
                    ),
                ),
            ),
        },
    ),
    "dataset": Family(
        knobs=("dataset.val_fraction", "dataset.seed", "dataset.options"),
        tested=(
            _t(
                "unknown options are rejected, not dropped",
                _BUILTIN,
                "test_unknown_options_are_rejected_not_dropped",
            ),
        ),
        entries={
            "cifar10": Method(
                paper="Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009",
                tested=(
                    _t("reads the pickle batches", _FILES, "test_cifar10_reads_pickle_batches"),
                    _t(
                        "refuses pickles that would build arbitrary objects",
                        _FILES,
                        "test_cifar10_refuses_pickles_that_build_arbitrary_objects",
                    ),
                ),
            ),
            "digits": Method(
                paper="UCI Optical Recognition of Handwritten Digits (scikit-learn's bundled copy)",
                tested=(
                    _t(
                        "shapes, types and value range",
                        _BUILTIN,
                        "test_digits_shapes_types_and_range",
                    ),
                    _t(
                        "the split is deterministic in the seed",
                        _BUILTIN,
                        "test_digits_split_is_deterministic_in_the_seed",
                    ),
                    _t(
                        "the stratified split keeps class shares",
                        _BUILTIN,
                        "test_stratified_split_keeps_class_shares",
                    ),
                ),
            ),
            "gaussian_mixture": Method(
                paper="the ring of Gaussians of GAN mode-collapse studies (e.g. Metz et al., "
                "Unrolled Generative Adversarial Networks, ICLR 2017)",
                tested=(
                    _t(
                        "seeded, balanced over the modes and on the circle",
                        _GAN_MODEL,
                        "test_mixture_is_seeded_balanced_and_on_the_circle",
                    ),
                ),
            ),
            "mnist": Method(
                paper="LeCun, Bottou, Bengio, Haffner, Gradient-based learning applied to "
                "document recognition, Proc. IEEE 1998",
                tested=(
                    _t("reads idx files (plain or gzip)", _FILES, "test_mnist_reads_idx_files"),
                    _t(
                        "a truncated idx file is a clear error",
                        _FILES,
                        "test_truncated_idx_is_a_clear_error",
                    ),
                ),
            ),
            "synthetic": Method(
                paper="",
                tested=(
                    _t(
                        "deterministic and configurable",
                        _BUILTIN,
                        "test_synthetic_is_deterministic_and_configurable",
                    ),
                    _t(
                        "a small MLP can learn it",
                        _BUILTIN,
                        "test_synthetic_is_learnable_by_a_small_mlp",
                    ),
                ),
            ),
            "text": Method(
                paper="",
                tested=(
                    _t(
                        "targets are the tokens shifted by one and windows rebuild the file",
                        _TEXT,
                        "test_targets_are_tokens_shifted_and_windows_rebuild_the_file",
                    ),
                    _t(
                        "the split is deterministic in the seed and differs across seeds",
                        _TEXT,
                        "test_split_is_deterministic_in_seed_and_differs_across_seeds",
                    ),
                    _t(
                        "the default corpus is the Python standard library's sources",
                        _TEXT,
                        "test_default_corpus_is_the_standard_library",
                    ),
                ),
            ),
        },
    ),
}
