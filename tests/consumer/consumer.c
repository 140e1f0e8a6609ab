/* The C ABI from an installed package, in C99: the host reference on a case with a closed-form answer
 * (identical keys: O is the mean of V), and a bad call that must return a status and a message. */
#include <dilatron/c_api.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#define N 5
#define D 8

static dilatron_tensor tensor(float* data, int64_t b, int64_t n, int64_t h, int64_t d) {
  dilatron_tensor t;
  t.data = data;
  t.dtype = DILATRON_F32;
  t.shape[0] = b, t.shape[1] = n, t.shape[2] = h, t.shape[3] = d;
  t.strides[3] = 1, t.strides[2] = d, t.strides[1] = h * d, t.strides[0] = n * h * d;
  return t;
}

int main(void) {
  float q[N * D], k[N * D], v[N * D], out[N * D];
  int i, d;
  for (i = 0; i < N * D; ++i) q[i] = (float)cos(0.3 * i), k[i] = (float)(i % D), v[i] = (float)(i / D);
  const int64_t segments[1] = {N}, dilations[1] = {1};
  dilatron_attention* attention = NULL;
  if (strcmp(dilatron_version(), EXPECTED_VERSION) != 0) {
    printf("library version %s, package %s\n", dilatron_version(), EXPECTED_VERSION);
    return 1;
  }
  if (dilatron_create(segments, dilations, 1, DILATRON_LONGNET, 0, 0.0, &attention) != DILATRON_OK) {
    printf("create failed: %s\n", dilatron_last_error());
    return 1;
  }
  dilatron_tensor tq = tensor(q, 1, N, 1, D), tk = tensor(k, 1, N, 1, D), tv = tensor(v, 1, N, 1, D),
                  to = tensor(out, 1, N, 1, D);
  if (dilatron_reference_forward(attention, &tq, &tk, &tv, &to, NULL) != DILATRON_OK) {
    printf("reference failed: %s\n", dilatron_last_error());
    return 1;
  }
  for (i = 0; i < N; ++i) {
    for (d = 0; d < D; ++d) {
      if (fabs(out[i * D + d] - (N - 1) / 2.0) > 1e-5) {
        printf("O[%d,%d] = %f, want %f\n", i, d, out[i * D + d], (N - 1) / 2.0);
        return 1;
      }
    }
  }
  dilatron_destroy(attention);

  attention = NULL;
  if (dilatron_create(segments, dilations, 0, DILATRON_LONGNET, 0, 0.0, &attention) != DILATRON_ERROR_INVALID ||
      attention != NULL || strlen(dilatron_last_error()) == 0) {
    printf("zero branches were not refused with a message\n");
    return 1;
  }
  printf("C consumer: dilatron %s OK (bad call: %s)\n", dilatron_version(), dilatron_last_error());
  return 0;
}
