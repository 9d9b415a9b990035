// The end-to-end evaluation pipeline (examples/common/model_eval.hpp, the
// engine of examples/model_eval) on a shortened set: reproducible numbers,
// exact float reference, honest bit counts, and the quantizer hook.
#include "catch.hpp"

#include "common/finetune.hpp"
#include "common/model_eval.hpp"
#include "data_files.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

namespace {

namespace me = svq::model_eval;

using svq::test::data_dir;

// A shortened table: 3 x 24 sampled tokens, 4 calibration sequences, one target.
me::run_options short_options(unsigned threads) {
    me::run_options o;
    o.data_dir = data_dir;
    o.seed = 7;
#ifdef SVQ_SANITIZE_BUILD
    o.sequences = 2;
    o.length = 12;
    o.calibration_sequences = 2;
#else
    o.sequences = 3;
    o.length = 24;
    o.calibration_sequences = 4;
#endif
    o.targets = {3.25};
    o.threads = threads;
    return o;
}

// A method that stores the float weights as they are (32 bits each).
me::method identity_method() {
    return {"identity", [](const me::layer_problem& p, double) {
                return me::layer_solution{std::vector<float>(p.weights.begin(), p.weights.end()), 32 * p.weights.size(),
                                          "fp32"};
            }};
}

// The standard methods without Hessian PVQ and its mixed-precision variants
// (their configuration searches take minutes over all 35 layers;
// examples/model_eval runs them), plus the identity.
std::vector<me::method> test_methods() {
    std::vector<me::method> methods;
    for (me::method& m : me::standard_methods())
        if (m.name.rfind("pvq-hessian", 0) != 0) methods.push_back(std::move(m));
    methods.push_back(identity_method());
    return methods;
}

}  // namespace

TEST_CASE("rtn_candidates: the most scales per width at <= target, fp16 scales counted", "[model_eval]") {
    // 64 columns: int3 needs one scale per row (g64: 3.25); int2 fits g16 (3.0); int1 g8 (3.0).
    const std::vector<svq::rtn_config> c = me::rtn_candidates(64, 3.25);
    REQUIRE(c.size() == 3);
    CHECK((c[0].bits == 1 && c[0].group == 8));
    CHECK((c[1].bits == 2 && c[1].group == 16));
    CHECK((c[2].bits == 3 && c[2].group == 64));
    // 172 columns: int3 g64 would be 3 + 48 / 172 = 3.279 > 3.25, so g128 (3 + 32 / 172).
    const std::vector<svq::rtn_config> w2 = me::rtn_candidates(172, 3.25);
    REQUIRE(w2.size() == 3);
    CHECK((w2[2].bits == 3 && w2[2].group == 128));
    // 2 bpw leaves only int1 g16; below 1 + 16 / 64 nothing fits.
    const std::vector<svq::rtn_config> two = me::rtn_candidates(64, 2.0);
    REQUIRE(two.size() == 1);
    CHECK((two[0].bits == 1 && two[0].group == 16));
    CHECK(me::rtn_candidates(64, 1.2).empty());
}

TEST_CASE("disjoint_calibration: draws already in the evaluation set are skipped", "[model_eval][data]") {
    if (!me::data_present(data_dir)) {
        WARN("data absent (" << data_dir.string() << "): disjoint_calibration test skipped");
        return;
    }
    const svq::llama2::model m = svq::llama2::model::load(data_dir / "stories260K.bin");
    me::run_options o;
    o.seed = 3;
    o.length = 2;  // BOS + one sampled token: few distinct sequences, so draws repeat
    o.calibration_sequences = 6;
    const std::vector<std::vector<int>> evaluation = svq::llama2::sample_sequences(m, 16, o.length, o.seed, 1.0f);
    // Oracle: a long run of the calibration stream at a temperature, filtered by hand;
    // the count of draws skipped comes back in `skipped`.
    const auto filtered = [&](float temperature, std::size_t& skipped) {
        std::vector<std::vector<int>> kept;
        skipped = 0;
        for (const std::vector<int>& c :
             svq::llama2::sample_sequences(m, 400, o.length, o.seed + me::calibration_seed_offset, temperature)) {
            if (kept.size() == 6) break;
            if (std::find(evaluation.begin(), evaluation.end(), c) != evaluation.end()) {
                ++skipped;
            } else {
                kept.push_back(c);
            }
        }
        return kept;
    };
    std::size_t skipped = 0;
    const std::vector<std::vector<int>> expected = filtered(1.0f, skipped);
    REQUIRE(expected.size() == 6);
    CHECK(skipped > 0);  // the case under test happens at this length
    CHECK(me::disjoint_calibration(m, evaluation, o) == expected);
    // Another temperature: the same stream sampled from softmax(logits / T), filtered the same way.
    o.calibration_temperature = 1.5f;
    const std::vector<std::vector<int>> expected_hot = filtered(1.5f, skipped);
    REQUIRE(expected_hot.size() == 6);
    CHECK(expected_hot != expected);  // the temperature reaches the sampler
    CHECK(me::disjoint_calibration(m, evaluation, o) == expected_hot);
    o.calibration_temperature = 1.0f;
    // A length at which every draw is in the evaluation set: a clear error, not a hang.
    o.length = 1;
    CHECK_THROWS_AS(me::disjoint_calibration(m, {{svq::llama2::bos_token}}, o), svq::invalid_argument);
}

TEST_CASE("model_eval: float row exact, bits honest, two runs identical", "[model_eval][data]") {
    if (!me::data_present(data_dir)) {
        WARN("data absent (" << data_dir.string() << "): model_eval test skipped");
        return;
    }
    const std::vector<me::method> methods = test_methods();
    const me::table first = me::run(short_options(1), methods);
    const me::run_options o = short_options(1);

    REQUIRE(first.rows.size() == 1 + methods.size());
    CHECK(first.shared_sequences == 0);
    CHECK(first.evaluation_positions == static_cast<std::size_t>(o.sequences * (o.length - 1)));
    CHECK(first.calibration_tokens == static_cast<std::size_t>(o.calibration_sequences * o.length));

    // The float model against itself: KL exactly 0, top-1 exactly 1, and the reference perplexity.
    const me::table_row& reference = first.rows.front();
    CHECK(reference.method == "float");
    CHECK(reference.weights == 226560);  // 5 x (2 x 64x64 + 2 x 32x64 + 3 x 172x64)
    CHECK(reference.real.positions == 3949);
    CHECK(std::abs(reference.real.perplexity - 5.391) < 1e-3);
    CHECK(std::abs(reference.real.mean_nll - 1.6848) < 1e-3);
    for (const me::set_metrics* m : {&reference.real, &reference.sampled}) {
        CHECK(m->mean_kl == 0.0);
        CHECK(m->max_kl == 0.0);
        CHECK(m->top1 == 1.0);
    }
    CHECK(reference.rel_real == 0.0);
    CHECK(reference.rel_sampled == 0.0);

    for (const me::table_row& r : first.rows) {
        if (r.method == "float") continue;
        CAPTURE(r.method, r.bpw);
        CHECK(r.weights == 226560);
        CHECK(r.layer_configs.size() == 35);
        CHECK(r.bpw == static_cast<double>(r.stored_bits) / static_cast<double>(r.weights));
        if (r.method == "identity") {
            // The hook path itself changes nothing: a copy of the float weights is the float model.
            CHECK(r.bpw == 32.0);
            CHECK(r.sampled.mean_kl == 0.0);
            CHECK(r.sampled.top1 == 1.0);
            CHECK(r.real.perplexity == reference.real.perplexity);
            continue;
        }
        CHECK(r.bpw <= 3.25);
        CHECK(r.bpw > 3.0);
        CHECK(r.sampled.mean_kl > 0.0);  // (top-1 may stay 1 on the sanitizer build's 22 positions)
        CHECK(r.real.perplexity > reference.real.perplexity);
        CHECK(r.rel_real == Catch::Approx(r.real.perplexity / reference.real.perplexity - 1.0).epsilon(1e-12));
    }

    // Same seed, another thread count: every number identical.
    const me::table second = me::run(short_options(2), methods);
    REQUIRE(second.rows.size() == first.rows.size());
    for (std::size_t i = 0; i < first.rows.size(); ++i) {
        CAPTURE(first.rows[i].method);
        CHECK(first.rows[i].same_numbers(second.rows[i]));
    }
    // Another seed samples another evaluation set.
    me::run_options other = short_options(2);
    other.seed = 8;
    other.methods = {"rtn"};
    const me::table third = me::run(other, methods);
    CHECK(third.rows.at(1).sampled.mean_kl != first.rows.at(1).sampled.mean_kl);
    CHECK(third.rows.at(1).real == first.rows.at(1).real);  // the real text and the RTN codes do not depend on it
}

TEST_CASE("model_eval: bad options are rejected with the value", "[model_eval][data]") {
    if (!me::data_present(data_dir)) {
        WARN("data absent (" << data_dir.string() << "): model_eval option test skipped");
        return;
    }
    me::run_options o = short_options(1);
    o.methods = {"no-such-method"};
    REQUIRE_THROWS_AS(me::run(o, test_methods()), svq::invalid_argument);
    o = short_options(1);
    o.length = 1;
    REQUIRE_THROWS_AS(me::run(o, test_methods()), svq::invalid_argument);
    o = short_options(1);
    o.calibration_temperature = 0.0f;
    REQUIRE_THROWS_AS(me::run(o, test_methods()), svq::invalid_argument);
    o.calibration_temperature = std::numeric_limits<float>::quiet_NaN();
    REQUIRE_THROWS_AS(me::run(o, test_methods()), svq::invalid_argument);
    o = short_options(1);
    o.data_dir = data_dir / "no_such_dir";
    REQUIRE_THROWS_AS(me::run(o, test_methods()), svq::io_error);
}

TEST_CASE("allocate_bits: optimal on a convex instance, within budget, never worse than the fallback", "[model_eval]") {
    // Three matrices, options at 100 / 200 / 300 / 400 bits with convex losses.
    const std::vector<std::vector<me::rate_option>> options = {
        {{100, 9.0}, {200, 4.0}, {300, 2.0}, {400, 1.5}},
        {{100, 3.0}, {200, 1.0}, {300, 0.6}, {400, 0.5}},
        {{100, 20.0}, {200, 8.0}, {300, 3.0}, {400, 1.0}},
    };
    for (const std::size_t budget : {300u, 550u, 600u, 750u, 900u, 1200u}) {
        CAPTURE(budget);
        // Brute force over the 64 choices.
        double best = std::numeric_limits<double>::infinity();
        for (std::size_t a = 0; a < 4; ++a)
            for (std::size_t b = 0; b < 4; ++b)
                for (std::size_t c = 0; c < 4; ++c)
                    if (options[0][a].bits + options[1][b].bits + options[2][c].bits <= budget)
                        best = std::min(best, options[0][a].loss + options[1][b].loss + options[2][c].loss);
        const std::vector<std::size_t> pick = me::allocate_bits(options, budget);
        REQUIRE(pick.size() == 3);
        std::size_t bits = 0;
        double loss = 0.0;
        for (std::size_t i = 0; i < 3; ++i) {
            bits += options[i][pick[i]].bits;
            loss += options[i][pick[i]].loss;
        }
        CHECK(bits <= budget);
        CHECK(loss == Catch::Approx(best).epsilon(1e-12));
    }
    // A fallback with a lower loss than the allocation wins (a non-convex instance the greedy misses).
    // At 400 bits: the hull gives (100+200, 10 -> 0 + 4) = loss 14; (300 + 100) has loss 10.
    const std::vector<std::vector<me::rate_option>> hard = {{{100, 10.0}, {300, 0.0}}, {{100, 10.0}, {200, 4.0}}};
    const std::vector<std::size_t> greedy = me::allocate_bits(hard, 400);
    CHECK(greedy == std::vector<std::size_t>{0, 1});
    const std::vector<std::size_t> with_fallback = me::allocate_bits(hard, 400, {1, 0});
    CHECK(hard[0][with_fallback[0]].loss + hard[1][with_fallback[1]].loss <=
          hard[0][greedy[0]].loss + hard[1][greedy[1]].loss);
    CHECK(with_fallback == std::vector<std::size_t>{1, 0});
    // Nothing fits: the smallest choice's bits and the budget are in the message.
    CHECK_THROWS_WITH(me::allocate_bits(options, 299), Catch::Contains("300") && Catch::Contains("299"));
}

TEST_CASE("pvq-hessian-mix: bits within budget (recomputed), estimate <= uniform, thread-independent", "[model_eval][data]") {
    if (!me::data_present(data_dir)) {
        WARN("data absent (" << data_dir.string() << "): pvq-hessian-mix test skipped");
        return;
    }
    // Block 0's matrices (the four attention ones on the sanitizer build), a short
    // calibration set, a cheap configuration search.
#ifdef SVQ_SANITIZE_BUILD
    constexpr std::size_t count = 4;
#else
    constexpr std::size_t count = 7;
#endif
    const svq::llama2::model model = svq::llama2::model::load(data_dir / "stories260K.bin");
    const std::vector<std::vector<int>> calibration = svq::llama2::sample_sequences(model, 2, 24, 11, 1.0f);
    const std::vector<std::vector<double>> hessians = me::calibration_hessians(model, calibration, 0.01);
    const std::vector<svq::llama2::linear_view> views = model.linears();
    std::vector<me::layer_problem> problems;
    std::size_t weights = 0;
    for (std::size_t i = 0; i < count; ++i) {
        me::layer_problem p;
        p.name = views[i].name;
        p.rows = static_cast<std::size_t>(views[i].rows);
        p.cols = static_cast<std::size_t>(views[i].cols);
        p.weights = views[i].weights;
        p.hessian = hessians[i];
        problems.push_back(p);
        weights += p.rows * p.cols;
    }
    me::mix_options options;
    options.rate_offsets = {-0.5, 0.0, 0.5};
    options.sensitivity_sequences = 2;
    options.config.group_dims = {32};
    options.config.row_scale_bits = {8};
    options.config.max_gain_bits = 3;
    options.gptq.try_both_rotations = false;
    options.gptq.refine_passes = 0;
    const double target = 3.25;

    me::pvq_hessian_mix one(options), two(options);
    const me::mix_result a = one.run(problems, target, {&model, &calibration, 1});
    const me::mix_result b = two.run(problems, target, {&model, &calibration, 2});
    const me::mix_result again = one.run(problems, target, {&model, &calibration, 2});  // from the cache

    CHECK(a.budget_bits == static_cast<std::size_t>(std::floor(target * static_cast<double>(weights))));
    REQUIRE(a.solution.layers.size() == count);
    REQUIRE(a.configs.size() == count);
    std::size_t stored = 0, recomputed = 0;
    bool mixed = false;
    for (std::size_t i = 0; i < count; ++i) {
        CAPTURE(i, a.rates[i]);
        stored += a.solution.layers[i].stored_bits;
        recomputed += svq::make_layout(problems[i].rows, problems[i].cols, a.configs[i]).total_bits();
        CHECK(a.sensitivity[i] > 0.0);
        mixed = mixed || a.rates[i] != target;
        // The reconstruction is a real quantization of this matrix: the proxy loss is positive.
        CHECK(svq::proxy_loss(problems[i].weights, a.solution.layers[i].weights, problems[i].rows, problems[i].cols,
                              problems[i].hessian) > 0.0);
    }
    CHECK(stored == recomputed);
    CHECK(stored <= a.budget_bits);
    CHECK(a.solution.shared_bits == 0);
    CHECK(mixed);  // sensitivities differ by orders of magnitude: not every matrix stays at the target
    CHECK(a.estimated_loss <= a.uniform_estimated_loss);
    CHECK(a.estimated_loss < a.uniform_estimated_loss * 0.99);

    for (const me::mix_result* other : {&b, &again}) {
        CHECK(other->rates == a.rates);
        CHECK(other->sensitivity == a.sensitivity);
        CHECK(other->estimated_loss == a.estimated_loss);
        for (std::size_t i = 0; i < count; ++i) {
            CHECK(other->solution.layers[i].weights == a.solution.layers[i].weights);
            CHECK(other->solution.layers[i].config == a.solution.layers[i].config);
        }
    }
    // The sequential pass keeps every configuration (same bits), changes the
    // reconstructions, and does not depend on the thread count either.
    const me::mix_result seq1 = one.run(problems, target, {&model, &calibration, 1, 0.01}, true);
    const me::mix_result seq2 = two.run(problems, target, {&model, &calibration, 2, 0.01}, true);
    bool changed = false;
    for (std::size_t i = 0; i < count; ++i) {
        CAPTURE(i);
        CHECK(seq1.solution.layers[i].stored_bits == a.solution.layers[i].stored_bits);
        CHECK(seq1.configs[i] == a.configs[i]);
        CHECK(seq1.solution.layers[i].weights == seq2.solution.layers[i].weights);
        changed = changed || seq1.solution.layers[i].weights != a.solution.layers[i].weights;
    }
    CHECK(changed);
    // Without the calibration context the method refuses.
    CHECK_THROWS_AS(one.run(problems, target, {}), svq::invalid_argument);

    // pvq-tuned on the same start: same configurations and bits, the kept
    // state's holdout loss is what the returned model really scores (recomputed
    // here from the solution) and never above the start's, thread-independent;
    // with no steps the start comes back unchanged.
    me::tune_options t;
    t.steps = 6;
    t.batch = 1;
    t.holdout = 1;
    t.check_every = 2;
    t.weight_lr = 0.02;
    me::tune_report r1, r2;
    const me::model_solution tuned1 = me::tune_pvq(problems, seq1.matrices, {&model, &calibration, 1, 0.01}, t, &r1);
    const me::model_solution tuned2 = me::tune_pvq(problems, seq1.matrices, {&model, &calibration, 2, 0.01}, t, &r2);
    REQUIRE(tuned1.layers.size() == count);
    REQUIRE(tuned1.norms.has_value());
    CHECK(r1.holdout_curve.size() == 4);  // the start and steps 2, 4, 6
    CHECK(r1.best_holdout <= r1.start_holdout);
    CHECK(r1.holdout_curve == r2.holdout_curve);
    svq::llama2::model tuned_model = model;
    for (std::size_t i = 0; i < count; ++i) {
        CAPTURE(i);
        CHECK(tuned1.layers[i].stored_bits == seq1.solution.layers[i].stored_bits);
        CHECK(tuned1.layers[i].weights == tuned2.layers[i].weights);
        std::copy(tuned1.layers[i].weights.begin(), tuned1.layers[i].weights.end(), tuned_model.linears()[i].weights.begin());
    }
    CHECK(tuned1.norms->rms_final == tuned2.norms->rms_final);
    me::apply_norms(tuned_model, *tuned1.norms, "pvq-tuned");
    const std::vector<std::vector<int>> holdout(calibration.end() - 1, calibration.end());
    const svq::llama2::teacher_distributions teacher = svq::llama2::make_teacher(model, holdout);
    CHECK(svq::llama2::kl_loss(tuned_model, holdout, teacher) == Approx(r1.best_holdout).epsilon(1e-9));
    // Row scales re-planned each step: still the same configurations and bits.
    t.keep_row_scales = false;
    me::tune_report rs;
    const me::model_solution replanned = me::tune_pvq(problems, seq1.matrices, {&model, &calibration, 1, 0.01}, t, &rs);
    CHECK(rs.best_holdout <= rs.start_holdout);
    for (std::size_t i = 0; i < count; ++i) CHECK(replanned.layers[i].stored_bits == seq1.solution.layers[i].stored_bits);
    t.keep_row_scales = true;
    t.steps = 0;
    me::tune_report r0;
    const me::model_solution same = me::tune_pvq(problems, seq1.matrices, {&model, &calibration, 1, 0.01}, t, &r0);
    for (std::size_t i = 0; i < count; ++i) CHECK(same.layers[i].weights == seq1.solution.layers[i].weights);
    CHECK(r0.best_step == 0);
    t.holdout = 2;  // nothing left to train on
    CHECK_THROWS_AS(me::tune_pvq(problems, seq1.matrices, {&model, &calibration, 1, 0.01}, t), svq::invalid_argument);
}
