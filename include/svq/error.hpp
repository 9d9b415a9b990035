// svq error hierarchy. Every error svq throws derives from svq::error, and
// every message names the offending value so a user can act on it.
#pragma once

#include <stdexcept>
#include <string>

namespace svq {

// Base of every exception svq throws.
class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// An argument outside its documented domain: a dimension of zero, a NaN
// weight, mismatched shapes, a bpw target no configuration reaches.
class invalid_argument : public error {
public:
    using error::error;
};

// A value that does not fit the chosen representation: an (N, K) whose
// index needs more bits than the index type has, a count past a limit.
class overflow_error : public error {
public:
    using error::error;
};

// Input data (a file, a bitstream, an index) that is not what it claims to
// be: truncated, corrupted, or an index outside [0, V(N, K)).
class corrupt_data : public error {
public:
    using error::error;
};

// A file could not be opened, read or written.
class io_error : public error {
public:
    using error::error;
};

}  // namespace svq
