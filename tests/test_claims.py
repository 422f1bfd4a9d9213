"""What the README promises, and the tests that fail when a promise is broken.

Each claim below is a sentence of the README (its first bullets, the error and exit-code
promises, the data guarantees) with the tests that guard it. The test here checks that every
claim still stands in the README and that every test it names exists, so a claim cannot lose
its guard, nor a guard be renamed away, without this failing.
"""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# (words that stand in the README, [test files and functions that fail when the claim is broken])
CLAIMS = [
    ("Same init (`nndsvda`, `nndsvd`, `nndsvdar`, `random` draw the",
     ["test_core.py::test_init_equals_sklearn", "test_init.py::test_nndsvd_is_scikit_learns_on_ordinary_data",
      "test_init.py::test_random_start_is_scikit_learns_draw"]),
    ("same `cd` and `mu` iterates",
     ["test_core.py::test_cd_equals_sklearn", "test_core.py::test_mu_equals_sklearn"]),
    ("solves the\n  non-negative least-squares problem of every row to optimality and proves it",
     ["test_nnls.py::test_transform_with_the_components_of_a_real_fit_at_large_k_equals_scipy",
      "test_nnls.py::test_torture_transform_equals_scipy_and_is_certified",
      "test_nnls.py::test_the_certificate_agrees_with_kkt_written_from_the_residual",
      "test_properties.py::test_transform_satisfies_the_kkt_conditions"]),
    ("a row that still\n  cannot be certified is counted there, warned about, and turns `--strict` into exit 3",
     ["test_nnls.py::test_an_unconverged_solve_is_never_passed_off_as_exact",
      "test_nnls.py::test_a_solve_that_went_nan_is_caught_and_solved_again",
      "test_nnls.py::test_strict_transform_exits_3_only_for_uncertified_rows"]),
    ("The Gram matrix and cross products are formed in float64 even for float32\n  data",
     ["test_nnls.py::test_float32_nearly_collinear_components_equal_scipy"]),
    ("It never goes negative like a pseudo-inverse\n  projection",
     ["test_core.py::test_transform_is_not_the_pseudo_inverse_projection"]),
    ("fits like X and reports the same relative error",
     ["test_exactness.py::test_a_fit_of_X_times_a_power_of_four_is_the_fit_of_X_bit_for_bit",
      "test_exactness.py::test_scaled_data_fits_to_the_unscaled_error_and_reports_the_true_one",
      "test_exactness.py::test_penalties_scale_with_the_data_bit_for_bit"]),
    ("Every reported number (objective, history, divergence, errors) is\n  accumulated in float64",
     ["test_exactness.py::test_every_reported_number_is_a_float64_recomputation",
      "test_exactness.py::test_sparse_float32_near_exact_fit_reports_the_true_small_error",
      "test_exactness.py::test_float32_error_at_1e18_is_the_true_one"]),
    ("A fit that produces NaN or infinite factors is an error (exit 70)",
     ["test_exactness.py::test_a_fit_that_produces_nan_is_an_error_not_an_answer"]),
    ("the fixed factor comes back bit-identical",
     ["test_properties.py::test_fixed_factor_is_returned_bit_identical",
      "test_cli.py::test_fix_H_returns_H_bit_identical_and_transform_agrees"]),
    ("Dense and sparse input (never densified)",
     ["test_sparse_input.py::test_fits_never_densify_sparse_X",
      "test_sparse_input.py::test_transform_fixed_W_and_metrics_never_densify",
      "test_properties.py::test_sparse_input_gives_the_dense_answer"]),
    ("float32 kept as float32",
     ["test_properties.py::test_float32_is_preserved", "test_cli.py::test_float32_input_stays_float32_end_to_end"]),
    ("Bad input gets one line on stderr",
     ["test_cli_errors.py::test_bad_input_gets_one_line_and_its_exit_code",
      "test_cli_hostile.py::test_every_refusal_above_has_its_row_in_the_readme"]),
    ("internal error (a bug): one line that says so; `NMF_DEBUG=1 nmf …` prints the traceback too",
     ["test_cli_hostile.py::test_a_bug_exits_70_with_one_line_and_NMF_DEBUG_shows_the_traceback"]),
    ("| 74 | reading or writing failed part-way |",
     ["test_cli_hostile.py::test_a_full_stdout_exits_74"]),
    ("`--missing nan` fits around NaN entries",
     ["test_missing.py::test_a_fit_with_missing_values_is_the_weighted_updates",
      "test_missing.py::test_the_observed_objective_never_rises"]),
    ("Each half-step minimises the objective over its factor, so it never rises",
     ["test_exactness.py::test_anls_with_missing_values_never_raises_its_objective",
      "test_weights.py::test_anls_is_alternating_exact_solves"]),
    ("the fit returns the best iterate it recorded",
     ["test_core.py::test_ehals_and_emu_never_return_an_iterate_worse_than_the_best_they_recorded"]),
]


def defined_tests(path):
    """The names of the test functions a file defines."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def readme_text():
    return re.sub(r"[ \t]+", " ", (REPO / "README.md").read_text(encoding="utf-8"))


@pytest.mark.parametrize("claim,tests", CLAIMS, ids=[c[0][:40] for c in CLAIMS])
def test_every_claim_stands_in_the_readme_and_has_its_tests(claim, tests):
    text = readme_text()
    assert re.sub(r"[ \t]+", " ", claim) in text, f"the README no longer says: {claim!r}"
    assert tests, "a claim with no test guarding it"
    for node in tests:
        file, name = node.split("::")
        path = REPO / "tests" / file
        assert path.exists(), f"{file} is gone"
        assert name in defined_tests(path), f"{node} is gone"
