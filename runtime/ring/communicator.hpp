// The seam between the ring's schedule and the wire: the public ring::Communicator. An executor walks
// a RingPlan and hands each step's messages to one; Host (threads in one process, host memory), Local
// (P ranks on one GPU, device copies) and NCCL (real GPUs) implement it. Whether a transport overlaps
// transfers with kernels is its own business: NCCL overrides the stream-ordered calls (enqueue,
// make_wait, wait), the others keep their blocking defaults (communicator.cpp).
#pragma once

#include <dilatron/ring.hpp>
