// The end-to-end evaluation pipeline (examples/common/model_eval.hpp, the
// engine of examples/model_eval) on a shortened set: reproducible numbers,
// exact float reference, honest bit counts, and the quantizer hook.
#include "catch.hpp"

#include "common/model_eval.hpp"

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

namespace {

namespace me = svq::model_eval;

const std::filesystem::path data_dir{SVQ_DATA_DIR};

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

// The standard methods without Hessian PVQ (its configuration search takes
// minutes over all 35 layers; examples/model_eval runs it), plus the identity.
std::vector<me::method> test_methods() {
    std::vector<me::method> methods;
    for (me::method& m : me::standard_methods())
        if (m.name != "pvq-hessian") methods.push_back(std::move(m));
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
        CHECK(r.sampled.mean_kl > 0.0);
        CHECK(r.sampled.top1 < 1.0);
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
    o.data_dir = data_dir / "no_such_dir";
    REQUIRE_THROWS_AS(me::run(o, test_methods()), svq::io_error);
}
