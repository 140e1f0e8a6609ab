// Checking that a call fails the way a user would need: with dilatron::Error naming what is wrong.
#pragma once

#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <initializer_list>
#include <string>

namespace dilatron::test {

// Runs f, which must throw dilatron::Error whose message contains every one of `needles`.
template <class F>
void expect_error(F f, std::initializer_list<const char*> needles) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    for (const char* needle : needles) EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace dilatron::test
