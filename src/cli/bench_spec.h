// `blockflash bench spec`: the cost of a DFlash step against a plain decode step, on the
// model's real shapes (with --load-format dummy, no checkpoint needed). For each batch size:
// one plain decode step, one draft forward (the drafter over [anchor, MASK x K]), one
// (1+K)-token verify (the target with per-token GDN snapshots and tap capture) and the
// drafter's context K/V write for tau committed tokens (and, for reference, the same 1+K
// tokens as a plain chunk without snapshots); then the speedup at mean acceptance
// lengths tau (tokens committed per step): tau * t_decode / (t_draft + t_verify + t_ctx(tau)).
// Times are wall clock of the model forwards, greedy: only each logits row's argmax comes to
// the host (which synchronises); the sampler and scheduler are not included.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace bf::cli {

Command add_bench_spec(CLI::App* bench);

}  // namespace bf::cli
