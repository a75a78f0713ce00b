/*
 * A stand-in for libnvidia-ml, for tests of `berth device-plugin nvidia`
 * on machines without an NVIDIA GPU: a test double for hardware the test
 * machine does not have. It exports the NVML calls the plugin makes, with
 * NVML's C signatures, and describes the GPUs named in the environment:
 *
 *   FAKE_NVML_GPUS    "UUID,MINOR,NAME;UUID,MINOR,NAME;..." (unset: nvmlInit_v2
 *                     fails as it does without the kernel driver)
 *   FAKE_NVML_EVENTS  a file; when it appears holding "INDEX XID", the next
 *                     event wait returns an Xid critical error on GPU INDEX
 *                     (when that GPU is registered) and removes the file.
 *
 * Compiled by the test with the system C compiler.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_GPUS 8
#define SUCCESS 0
#define ERROR_UNINITIALIZED 1
#define ERROR_INVALID_ARGUMENT 2
#define ERROR_DRIVER_NOT_LOADED 9
#define ERROR_TIMEOUT 10
#define ERROR_INSUFFICIENT_SIZE 7
#define XID_CRITICAL_ERROR 0x8ULL

struct gpu {
    char uuid[96];
    char name[96];
    unsigned int minor;
};

struct memory {
    unsigned long long total, free, used;
};

struct event_data {
    struct gpu *device;
    unsigned long long event_type;
    unsigned long long event_data;
    unsigned int gpu_instance_id;
    unsigned int compute_instance_id;
};

struct event_set {
    int registered[MAX_GPUS];
};

static struct gpu gpus[MAX_GPUS];
static unsigned int gpu_count;
static int initialised;

int nvmlInit_v2(void) {
    const char *spec = getenv("FAKE_NVML_GPUS");
    if (spec == NULL)
        return ERROR_DRIVER_NOT_LOADED;
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", spec);
    gpu_count = 0;
    char *save = NULL;
    for (char *one = strtok_r(copy, ";", &save); one && gpu_count < MAX_GPUS;
         one = strtok_r(NULL, ";", &save)) {
        struct gpu *g = &gpus[gpu_count];
        char *fields = NULL;
        char *uuid = strtok_r(one, ",", &fields);
        char *minor = strtok_r(NULL, ",", &fields);
        char *name = strtok_r(NULL, ",", &fields);
        if (!uuid || !minor || !name)
            return ERROR_INVALID_ARGUMENT;
        snprintf(g->uuid, sizeof g->uuid, "%s", uuid);
        snprintf(g->name, sizeof g->name, "%s", name);
        g->minor = (unsigned int)strtoul(minor, NULL, 10);
        gpu_count++;
    }
    initialised = 1;
    return SUCCESS;
}

int nvmlShutdown(void) {
    initialised = 0;
    return SUCCESS;
}

const char *nvmlErrorString(int code) {
    switch (code) {
    case SUCCESS: return "Success";
    case ERROR_UNINITIALIZED: return "Uninitialized";
    case ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case ERROR_TIMEOUT: return "Timeout";
    default: return "Unknown Error";
    }
}

int nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialised)
        return ERROR_UNINITIALIZED;
    *count = gpu_count;
    return SUCCESS;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, struct gpu **device) {
    if (!initialised)
        return ERROR_UNINITIALIZED;
    if (index >= gpu_count)
        return ERROR_INVALID_ARGUMENT;
    *device = &gpus[index];
    return SUCCESS;
}

static int copy_out(const char *value, char *out, unsigned int length) {
    if (strlen(value) + 1 > length)
        return ERROR_INSUFFICIENT_SIZE;
    memcpy(out, value, strlen(value) + 1);
    return SUCCESS;
}

static int known(const struct gpu *device) {
    return initialised && device >= gpus && device < gpus + gpu_count;
}

int nvmlDeviceGetUUID(struct gpu *device, char *uuid, unsigned int length) {
    return known(device) ? copy_out(device->uuid, uuid, length) : ERROR_INVALID_ARGUMENT;
}

int nvmlDeviceGetName(struct gpu *device, char *name, unsigned int length) {
    return known(device) ? copy_out(device->name, name, length) : ERROR_INVALID_ARGUMENT;
}

int nvmlDeviceGetMinorNumber(struct gpu *device, unsigned int *minor) {
    if (!known(device))
        return ERROR_INVALID_ARGUMENT;
    *minor = device->minor;
    return SUCCESS;
}

int nvmlDeviceGetMemoryInfo(struct gpu *device, struct memory *memory) {
    if (!known(device))
        return ERROR_INVALID_ARGUMENT;
    memory->total = 80ULL << 30;
    memory->used = 1ULL << 30;
    memory->free = memory->total - memory->used;
    return SUCCESS;
}

int nvmlEventSetCreate(struct event_set **set) {
    if (!initialised)
        return ERROR_UNINITIALIZED;
    *set = calloc(1, sizeof **set);
    return *set ? SUCCESS : ERROR_INVALID_ARGUMENT;
}

int nvmlDeviceRegisterEvents(struct gpu *device, unsigned long long types, struct event_set *set) {
    if (!known(device) || set == NULL || types != XID_CRITICAL_ERROR)
        return ERROR_INVALID_ARGUMENT;
    set->registered[device - gpus] = 1;
    return SUCCESS;
}

/* An event waiting in FAKE_NVML_EVENTS for a registered GPU, if any. */
static int take_event(struct event_set *set, struct event_data *data) {
    const char *path = getenv("FAKE_NVML_EVENTS");
    if (path == NULL)
        return 0;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    unsigned int index;
    unsigned long long xid;
    int read = fscanf(f, "%u %llu", &index, &xid);
    fclose(f);
    remove(path);
    if (read != 2 || index >= gpu_count || !set->registered[index])
        return 0;
    memset(data, 0, sizeof *data);
    data->device = &gpus[index];
    data->event_type = XID_CRITICAL_ERROR;
    data->event_data = xid;
    return 1;
}

int nvmlEventSetWait_v2(struct event_set *set, struct event_data *data, unsigned int timeout_ms) {
    if (!initialised || set == NULL || data == NULL)
        return ERROR_INVALID_ARGUMENT;
    struct timespec step = {0, 5 * 1000 * 1000};
    for (unsigned int waited = 0; waited <= timeout_ms; waited += 5) {
        if (take_event(set, data))
            return SUCCESS;
        nanosleep(&step, NULL);
    }
    return ERROR_TIMEOUT;
}

int nvmlEventSetFree(struct event_set *set) {
    free(set);
    return SUCCESS;
}
