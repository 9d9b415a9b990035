// The examples' command-line parser, over CLI11 (as the svq tool's). An example registers its flags, valued
// options and optional positional arguments, each with a help line and the
// variable it sets (whose value at registration is the default), then parses
// argv. The usage text is generated from the registrations; --help (or -h)
// prints it and exits 0; an unknown argument, a missing value or a value
// that does not convert or lies outside its bounds throws
// svq::invalid_argument naming the argument and the value, e.g.
// "--threads: 'abc' is not an unsigned integer".
//
//     options o;
//     svq::examples::arg_parser p("hessian_quantize");
//     p.option("--threads", "T", o.threads, "GPTQ threads, 0 for all cores")
//         .flag("--synthetic", o.synthetic, "synthetic set only");
//     p.parse(argc, argv);  // --help: usage on stdout, exit 0; bad argument: usage on stderr, throws
//
// Value types: std::string, std::filesystem::path, integers, float, double,
// std::optional of these, and comma-separated lists (std::vector of them;
// empty items are skipped, a list of numbers needs at least one). Options
// that several examples take (--json FILE, --data DIR) have a registration
// of their own, so they read alike everywhere.
#pragma once

#include <svq/error.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace svq::examples {

// The interval a numeric option (or every item of a numeric list) must lie
// in; each end closed or open, an infinite end no limit.
struct bounds {
    double min = -std::numeric_limits<double>::infinity();
    double max = std::numeric_limits<double>::infinity();
    bool min_open = false, max_open = false;

    static bounds at_least(double lo) { return {lo, std::numeric_limits<double>::infinity(), false, false}; }
    static bounds closed(double lo, double hi) { return {lo, hi, false, false}; }      // [lo, hi]
    static bounds open_closed(double lo, double hi) { return {lo, hi, true, false}; }  // (lo, hi]
    static bounds open(double lo, double hi) { return {lo, hi, true, true}; }          // (lo, hi)

    [[nodiscard]] bool contains(double v) const {
        return (min_open ? v > min : v >= min) && (max_open ? v < max : v <= max);
    }
    // What a value outside says about itself: "is below 64", "is outside (0, 4]".
    [[nodiscard]] std::string violation() const {
        if (std::isinf(max)) return min_open ? fmt::format("is not above {}", min) : fmt::format("is below {}", min);
        if (std::isinf(min)) return max_open ? fmt::format("is not below {}", max) : fmt::format("is above {}", max);
        return fmt::format("is outside {}{}, {}{}", min_open ? '(' : '[', min, max, max_open ? ')' : ']');
    }
};

namespace args_detail {

template <class T>
inline constexpr bool is_vector_v = false;
template <class T>
inline constexpr bool is_vector_v<std::vector<T>> = true;

template <class T>
inline constexpr bool is_optional_v = false;
template <class T>
inline constexpr bool is_optional_v<std::optional<T>> = true;

template <class T>
inline constexpr bool is_number_v = (std::integral<T> && !std::same_as<T, bool>) || std::floating_point<T>;

[[noreturn]] inline void bad_value(std::string_view name, std::string_view quoted, std::string_view reason) {
    throw svq::invalid_argument(fmt::format("{}: {} {}", name, quoted, reason));
}

// One number from all of text, checked against b; quoted: how an error message shows the value.
template <class T>
T read_number(std::string_view name, std::string_view text, std::string_view quoted, const bounds& b) {
    T v{};
    if constexpr (std::integral<T>) {
        const char* kind = std::is_signed_v<T> ? "is not an integer" : "is not an unsigned integer";
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec == std::errc::result_out_of_range)
            bad_value(name, quoted, fmt::format("is outside the range of a {}-bit integer", 8 * sizeof(T)));
        if (ec != std::errc() || end != text.data() + text.size()) bad_value(name, quoted, kind);
    } else {
        double d = 0.0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
        if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(d))
            bad_value(name, quoted, "is not a finite number");
        if (std::fabs(d) > static_cast<double>(std::numeric_limits<T>::max()))
            bad_value(name, quoted, "is outside the range of the option's floating-point type");
        v = static_cast<T>(d);
    }
    if (!b.contains(static_cast<double>(v))) bad_value(name, quoted, b.violation());
    return v;
}

// Converts text into out (out's type picks the conversion).
template <class T>
void read_value(std::string_view name, std::string_view text, const bounds& b, T& out) {
    const std::string quoted = fmt::format("'{}'", text);
    if constexpr (is_optional_v<T>) {
        typename T::value_type v{};
        read_value(name, text, b, v);
        out = std::move(v);
    } else if constexpr (is_number_v<T>) {
        out = read_number<T>(name, text, quoted, b);
    } else if constexpr (std::same_as<T, std::string>) {
        out = std::string(text);
    } else if constexpr (std::same_as<T, std::filesystem::path>) {
        out = std::filesystem::path(std::string(text));
    } else if constexpr (is_vector_v<T>) {
        using item_type = typename T::value_type;
        T items;
        for (std::size_t p = 0; p <= text.size();) {
            const std::size_t comma = std::min(text.find(',', p), text.size());
            const std::string_view item = text.substr(p, comma - p);
            p = comma + 1;
            if (item.empty()) continue;
            if constexpr (is_number_v<item_type>) {
                items.push_back(read_number<item_type>(name, item, fmt::format("'{}' in {}", item, quoted), b));
            } else {
                item_type v{};
                read_value(name, item, b, v);
                items.push_back(std::move(v));
            }
        }
        if (is_number_v<item_type> && items.empty())
            bad_value(name, quoted, "is not a comma-separated list of numbers");
        out = std::move(items);
    } else {
        static_assert(is_number_v<T>, "arg_parser: unsupported option type");
    }
}

// How the usage text shows a variable's value at registration (empty: no default shown).
template <class T>
std::string show_default(const T& v) {
    if constexpr (is_optional_v<T>) {
        return v ? show_default(*v) : std::string();
    } else if constexpr (std::same_as<T, std::filesystem::path>) {
        return v.string();
    } else if constexpr (is_vector_v<T>) {
        std::string out;
        for (const auto& item : v) {
            if (!out.empty()) out += ',';
            out += show_default(item);
        }
        return out;
    } else if constexpr (std::same_as<T, std::string>) {
        return v;
    } else {
        return fmt::format("{}", v);
    }
}

}  // namespace args_detail

class arg_parser {
public:
    // program: the name the usage line shows; about: a paragraph under it (optional).
    explicit arg_parser(std::string program, std::string about = {})
        : program_(std::move(program)), about_(std::move(about)) {}

    // A flag without a value: when given, target = value_if_given.
    arg_parser& flag(std::string name, bool& target, std::string help, bool value_if_given = true) {
        check_new(name);
        entries_.push_back(
            {std::move(name), {}, std::move(help), {}, kind::flag, [&target, value_if_given](std::string_view) {
                 target = value_if_given;
             }});
        return *this;
    }

    // An option with a value: `name METAVAR`; target's current value is the default the usage shows.
    template <class T>
    arg_parser& option(std::string name, std::string metavar, T& target, std::string help, bounds b = {}) {
        check_new(name);
        const std::string shown = args_detail::show_default(target);
        entries_.push_back(
            {name, std::move(metavar), std::move(help), shown, kind::option,
             [&target, name, b](std::string_view text) { args_detail::read_value(name, text, b, target); }});
        return *this;
    }

    // An optional positional argument, filled in registration order by the
    // arguments that do not start with '-'.
    template <class T>
    arg_parser& positional(std::string metavar, T& target, std::string help) {
        const std::string shown = args_detail::show_default(target);
        entries_.push_back(
            {metavar, metavar, std::move(help), shown, kind::positional,
             [&target, metavar](std::string_view text) { args_detail::read_value(metavar, text, {}, target); }});
        return *this;
    }

    // The options several examples take, spelled and explained alike in each.
    // --json FILE; what: what the file gets ("the table").
    arg_parser& json_option(std::optional<std::string>& file, std::string_view what) {
        return option("--json", "FILE", file, fmt::format("also write {} to FILE as JSON", what));
    }
    // --data DIR; files: what the example reads from DIR.
    arg_parser& data_option(std::filesystem::path& dir, std::string_view files) {
        return option("--data", "DIR", dir, fmt::format("directory with {}", files));
    }

    // The help text (CLI11's, from the registrations; defaults shown as "=value").
    [[nodiscard]] std::string usage() const {
        CLI::App app;
        build(app);
        return app.help();
    }

    // Sets the registered variables from args (argv without the program
    // name). Returns false when --help or -h came (the arguments after it are
    // not read); throws svq::invalid_argument on a bad argument (CLI11's
    // message: an unknown option, a missing value; or the conversion's,
    // naming the option and the value).
    [[nodiscard]] bool parse_args(std::span<const std::string_view> args) const {
        for (const std::string_view a : args) {
            if (a == "--help" || a == "-h") return false;
            if (a == "--") break;
        }
        CLI::App app;
        build(app);
        std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them last first
        try {
            app.parse(reversed);
        } catch (const CLI::CallForHelp&) {
            return false;
        } catch (const CLI::ParseError& e) {
            throw svq::invalid_argument(fmt::format("{} (try --help)", e.what()));
        }
        return true;
    }

    // parse_args over argv: --help prints the usage on stdout and exits 0; a
    // bad argument prints the usage on stderr and throws svq::invalid_argument.
    void parse(int argc, char** argv) const {
        const std::vector<std::string_view> args(argv + (argc > 0 ? 1 : 0), argv + argc);
        bool go_on = true;
        try {
            go_on = parse_args(args);
        } catch (const svq::invalid_argument&) {
            fmt::print(stderr, "{}", usage());
            throw;
        }
        if (!go_on) {
            fmt::print("{}", usage());
            std::exit(0);
        }
    }

private:
    enum class kind { flag, option, positional };
    struct entry {
        std::string name, metavar, help, shown;
        kind k;
        std::function<void(std::string_view)> set;
    };

    // The CLI11 application of the registrations: each option a string
    // whose value goes through the entry's conversion (args_detail::read_value);
    // a repeated option keeps its last value.
    void build(CLI::App& app) const {
        app.name(program_);
        app.description(about_);
        app.set_help_flag("-h,--help", "print this help and exit");
        for (const entry& e : entries_) {
            const std::function<void(std::string_view)> set = e.set;
            if (e.k == kind::flag) {
                app.add_flag_callback(e.name, [set] { set({}); }, e.help);
                continue;
            }
            CLI::Option* o = app.add_option_function<std::string>(
                e.name, [set](const std::string& v) { set(v); }, e.help);
            o->type_name(e.metavar)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
            if (!e.shown.empty()) o->default_str(e.shown);
        }
    }

    void check_new(const std::string& name) const {
        if (!name.starts_with('-') || name == "-h" || name == "--help")
            throw svq::invalid_argument(
                fmt::format("arg_parser: option name '{}' is reserved or lacks a leading '-'", name));
        for (const entry& e : entries_)
            if (e.name == name)
                throw svq::invalid_argument(fmt::format("arg_parser: option '{}' registered twice", name));
    }

    std::string program_, about_;
    std::vector<entry> entries_;
};

}  // namespace svq::examples
