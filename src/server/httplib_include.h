// cpp-httplib with the build flags of Debian's compiled libcpp-httplib. Include this, never
// <httplib.h> directly: the flags must match those the library was built with (pkg-config
// cpp-httplib --cflags), or the classes' layouts differ.
#pragma once

#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
#define CPPHTTPLIB_OPENSSL_SUPPORT
#endif
#ifndef CPPHTTPLIB_ZLIB_SUPPORT
#define CPPHTTPLIB_ZLIB_SUPPORT
#endif
#ifndef CPPHTTPLIB_BROTLI_SUPPORT
#define CPPHTTPLIB_BROTLI_SUPPORT
#endif
#include <httplib.h>
