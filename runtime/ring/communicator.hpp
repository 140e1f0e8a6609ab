// The seam between the ring's schedule and the wire: the public ring::Communicator. An executor walks
// a RingPlan and hands each step's messages to one; Host (threads in one process, host memory), Local
// (P ranks on one GPU, device copies) and NCCL (real GPUs) implement it.
#pragma once

#include <dilatron/ring.hpp>
