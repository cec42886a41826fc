/*
 * A fake libnvidia-ml.so.1 for bai's tests: exactly the NVML calls the agent's
 * NVML backend (agent/src/gpu/nvml.rs, through nvml-wrapper) makes, answering
 * with fixed values the test knows (agent/tests/nvml.rs mirrors them). Test
 * code only; built by the test with `cc -shared -fPIC`.
 *
 * The devices (FAKE_NVML_GPUS of them, 2 unless -D says otherwise):
 *   GPU i: name "Fake NVML GPU", UUID GPU-fa4e0000-0000-4000-8000-00000000000i,
 *          80 GiB of which (i+1) GiB used, PCI bus 00000000:(0x18+i):00.0,
 *          minor number i, utilization 10 + 20*i percent, temperature 40+i C,
 *          power 100000 + 1000*i mW, SM clock 1500 + i MHz.
 *   GPU 0: MIG disabled; ECC not supported; two compute processes, pid 1234
 *          with 1 GiB and pid 5678 whose memory NVML cannot tell.
 *   GPU 1: MIG enabled; 3 double-bit ECC errors; no processes; its
 *          temperature read fails (NVML_ERROR_UNKNOWN), always; one critical
 *          XID 79 is delivered by the first wait on a set it is registered in.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#ifndef FAKE_NVML_GPUS
#define FAKE_NVML_GPUS 2
#endif

typedef int nvmlReturn_t;
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_TIMEOUT 10
#define NVML_ERROR_ARGUMENT_VERSION_MISMATCH 25
#define NVML_ERROR_UNKNOWN 999

#define NVML_TEMPERATURE_GPU 0u
#define NVML_CLOCK_SM 1u
#define NVML_MEMORY_ERROR_TYPE_UNCORRECTED 1u
#define NVML_EVENT_TYPE_DOUBLE_BIT_ECC 0x2ull
#define NVML_EVENT_TYPE_XID_CRITICAL 0x8ull
#define NVML_VALUE_NOT_AVAILABLE (~0ull)

#define GIB (1024ull * 1024ull * 1024ull)

struct nvmlDevice_st {
    unsigned index;
};
typedef struct nvmlDevice_st *nvmlDevice_t;

typedef struct {
    char busIdLegacy[16];
    unsigned domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

typedef struct {
    unsigned gpu, memory;
} nvmlUtilization_t;

typedef struct {
    unsigned pid;
    unsigned long long usedGpuMemory;
    unsigned gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

struct nvmlEventSet_st {
    unsigned long long registered[FAKE_NVML_GPUS];
    int xid_delivered;
    int in_use;
};
typedef struct nvmlEventSet_st *nvmlEventSet_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType, eventData;
    unsigned gpuInstanceId, computeInstanceId;
} nvmlEventData_t;

static struct nvmlDevice_st devices[FAKE_NVML_GPUS];
static struct nvmlEventSet_st sets[8];
static int initialised;

#define CHECK_INIT() \
    do { if (initialised <= 0) return NVML_ERROR_UNINITIALIZED; } while (0)
#define CHECK_DEVICE(d) \
    do { \
        CHECK_INIT(); \
        if ((d) == NULL || (d) < devices || (d) >= devices + FAKE_NVML_GPUS) \
            return NVML_ERROR_INVALID_ARGUMENT; \
    } while (0)

static nvmlReturn_t copy_string(char *out, unsigned length, const char *s) {
    if (out == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(s) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, s, strlen(s) + 1);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) {
    for (unsigned i = 0; i < FAKE_NVML_GPUS; i++) devices[i].index = i;
    initialised++;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void) {
    CHECK_INIT();
    initialised--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument Version Mismatch";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned length) {
    CHECK_INIT();
    return copy_string(version, length, "580.65.06");
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    CHECK_INIT();
    if (version == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *version = 13000;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) {
    return nvmlSystemGetCudaDriverVersion_v2(version);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned *count) {
    CHECK_INIT();
    if (count == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *count = FAKE_NVML_GPUS;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned index, nvmlDevice_t *device) {
    CHECK_INIT();
    if (index >= FAKE_NVML_GPUS || device == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &devices[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned length) {
    CHECK_DEVICE(d);
    return copy_string(name, length, "Fake NVML GPU");
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned length) {
    CHECK_DEVICE(d);
    char s[64];
    snprintf(s, sizeof s, "GPU-fa4e0000-0000-4000-8000-%012x", d->index);
    return copy_string(uuid, length, s);
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
    CHECK_DEVICE(d);
    if (m == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (m->version != (unsigned)(sizeof(nvmlMemory_v2_t) | (2u << 24)))
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    m->total = 80 * GIB;
    m->reserved = GIB / 2;
    m->used = (d->index + 1) * GIB;
    m->free = m->total - m->reserved - m->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *p) {
    CHECK_DEVICE(d);
    if (p == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    memset(p, 0, sizeof *p);
    p->bus = 0x18 + d->index;
    p->pciDeviceId = 0x233010de;
    p->pciSubSystemId = 0x16c110de;
    snprintf(p->busId, sizeof p->busId, "00000000:%02X:00.0", p->bus);
    snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "0000:%02X:00.0", p->bus);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t d, unsigned *minor) {
    CHECK_DEVICE(d);
    if (minor == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *minor = d->index;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned *current, unsigned *pending) {
    CHECK_DEVICE(d);
    if (current == NULL || pending == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *current = *pending = d->index == 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    CHECK_DEVICE(d);
    if (u == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    u->gpu = 10 + 20 * d->index;
    u->memory = 5;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, unsigned sensor, unsigned *temp) {
    CHECK_DEVICE(d);
    if (sensor != NVML_TEMPERATURE_GPU || temp == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->index == 1) return NVML_ERROR_UNKNOWN;
    *temp = 40 + d->index;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned *power) {
    CHECK_DEVICE(d);
    if (power == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *power = 100000 + 1000 * d->index;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, unsigned type, unsigned *clock) {
    CHECK_DEVICE(d);
    if (clock == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (type != NVML_CLOCK_SM) return NVML_ERROR_NOT_SUPPORTED;
    *clock = 1500 + d->index;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, unsigned type, unsigned counter,
                                         unsigned long long *count) {
    CHECK_DEVICE(d);
    (void)counter;
    if (count == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->index == 0) return NVML_ERROR_NOT_SUPPORTED;
    *count = type == NVML_MEMORY_ERROR_TYPE_UNCORRECTED ? 3 : 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned *count,
                                                     nvmlProcessInfo_t *infos) {
    CHECK_DEVICE(d);
    if (count == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    static const nvmlProcessInfo_t gpu0[] = {
        {1234, GIB, ~0u, ~0u},
        {5678, NVML_VALUE_NOT_AVAILABLE, ~0u, ~0u},
    };
    unsigned n = d->index == 0 ? 2 : 0;
    if (*count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    if (n > 0 && infos == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned i = 0; i < n; i++) infos[i] = gpu0[i];
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t d, unsigned long long *types) {
    CHECK_DEVICE(d);
    if (types == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *types = NVML_EVENT_TYPE_XID_CRITICAL | NVML_EVENT_TYPE_DOUBLE_BIT_ECC;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    CHECK_INIT();
    if (set == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        if (!sets[i].in_use) {
            memset(&sets[i], 0, sizeof sets[i]);
            sets[i].in_use = 1;
            *set = &sets[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_UNKNOWN;
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types,
                                      nvmlEventSet_t set) {
    CHECK_DEVICE(d);
    if (set == NULL || !set->in_use) return NVML_ERROR_INVALID_ARGUMENT;
    if (types & ~(NVML_EVENT_TYPE_XID_CRITICAL | NVML_EVENT_TYPE_DOUBLE_BIT_ECC))
        return NVML_ERROR_NOT_SUPPORTED;
    set->registered[d->index] |= types;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned timeout_ms) {
    CHECK_INIT();
    (void)timeout_ms; /* nothing else ever happens: never sleeps */
    if (set == NULL || !set->in_use || data == NULL) return NVML_ERROR_INVALID_ARGUMENT;
#if FAKE_NVML_GPUS > 1
    if ((set->registered[1] & NVML_EVENT_TYPE_XID_CRITICAL) && !set->xid_delivered) {
        set->xid_delivered = 1;
        memset(data, 0, sizeof *data);
        data->device = &devices[1];
        data->eventType = NVML_EVENT_TYPE_XID_CRITICAL;
        data->eventData = 79;
        return NVML_SUCCESS;
    }
#endif
    return NVML_ERROR_TIMEOUT;
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    CHECK_INIT();
    if (set == NULL || !set->in_use) return NVML_ERROR_INVALID_ARGUMENT;
    set->in_use = 0;
    return NVML_SUCCESS;
}
