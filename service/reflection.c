/*
 * reflection.c: gRPC server reflection over an embedded FileDescriptorSet.
 *
 * aps_refl_create() copies the set, splits it on field 1 by hand (so each
 * file's bytes stay exactly protoc's, and are served without re-encoding),
 * unpacks each file with the protoc-c descriptor.proto codec to read its
 * name, imports and symbols, and builds three sorted tables:
 *   files    set order, duplicates by name dropped (the first is kept);
 *            each with its imports resolved to file indices
 *   syms     full name -> (kind, file), sorted by name
 *   exts     (extendee, number) -> file, sorted by both
 * (binary searches; a type's extensions are one range of exts).
 * The unpacked descriptors are freed again; the index holds only the copy
 * of the set and the tables. Lookups are O(log n); an answer costs one
 * breadth-first walk over the imports (O(files)).
 *
 * aps_refl_handle() decodes a request with the v1 codec (v1alpha is
 * wire-identical), builds the response in stack/heap temporaries pointing
 * into the index, and packs it. The stream's "sent" marks are committed
 * only once the packed response exists, so a failure changes nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apsd/engine.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "pbcheck.h"
#include "reflection.h"

/* The generated oneof case names, shortened. */
#define REQ(kind) GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_##kind
#define RESP(kind) GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_##kind

/* Why: protobuf's own parser refuses deeper nesting; so do we, which also
 * bounds our recursion on hostile input. */
#define MAX_NESTING 100

enum sym_kind { SYM_MESSAGE, SYM_ENUM, SYM_SERVICE, SYM_METHOD, SYM_FIELD };

struct refl_file {
    char *name;
    const uint8_t *data; /* into aps_refl.blob: protoc's bytes */
    size_t len;
    size_t *deps; /* indices into aps_refl.files */
    size_t n_deps;
};

struct refl_sym {
    char *name;
    size_t file;
    enum sym_kind kind;
};

struct refl_ext {
    char *extendee; /* full name, no leading '.' */
    int32_t number;
    size_t file;
};

struct aps_refl {
    uint8_t *blob;
    struct refl_file *files;
    size_t n_files;
    size_t *by_name; /* file indices sorted by name */
    struct refl_sym *syms;
    size_t n_syms, cap_syms;
    struct refl_ext *exts;
    size_t n_exts, cap_exts;
    const char **services; /* sorted; point into syms */
    size_t n_services;
};

struct aps_refl_stream {
    const aps_refl *r;
    uint8_t *sent; /* one flag per file */
};

/* ------------------------------------------------------------------ */
/* Raw wire reading (the outer FileDescriptorSet only)                  */
/* ------------------------------------------------------------------ */

static int
read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;

    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return APS_EINVAL;
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return APS_EINVAL;
}

/* Calls back for each `file` (field 1, length-delimited) of the set; other
 * fields are skipped (groups refused: FileDescriptorSet has none). */
static int
split_set(const uint8_t *p, const uint8_t *end,
          int (*cb)(void *ctx, const uint8_t *data, size_t len), void *ctx)
{
    while (p < end) {
        uint64_t key, n;
        int rc = read_varint(&p, end, &key);

        if (rc)
            return rc;
        if ((key >> 3) == 0 || (key >> 3) > 0x1fffffff)
            return APS_EINVAL;
        if ((key >> 3) == 1 && (key & 7) != 2)
            return APS_EINVAL;
        switch (key & 7) {
        case 0:
            if ((rc = read_varint(&p, end, &n)) != 0)
                return rc;
            break;
        case 1:
            if (end - p < 8)
                return APS_EINVAL;
            p += 8;
            break;
        case 2:
            if ((rc = read_varint(&p, end, &n)) != 0)
                return rc;
            if (n > (uint64_t)(end - p))
                return APS_EINVAL;
            if ((key >> 3) == 1 && (rc = cb(ctx, p, (size_t)n)) != 0)
                return rc;
            p += n;
            break;
        case 5:
            if (end - p < 4)
                return APS_EINVAL;
            p += 4;
            break;
        default:
            return APS_EINVAL;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Index building                                                       */
/* ------------------------------------------------------------------ */

/* The set while it is being indexed: every file unpacked. */
struct build {
    aps_refl *r;
    Google__Protobuf__FileDescriptorProto **fdp; /* parallel to r->files */
    size_t cap;
};

static int
collect_file(void *ctx, const uint8_t *data, size_t len)
{
    struct build *b = ctx;
    aps_refl *r = b->r;
    Google__Protobuf__FileDescriptorProto *f;

    if (r->n_files == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        void *nf = realloc(r->files, cap * sizeof(*r->files));

        if (!nf)
            return APS_ENOMEM;
        r->files = nf;
        nf = realloc(b->fdp, cap * sizeof(*b->fdp));
        if (!nf)
            return APS_ENOMEM;
        b->fdp = nf;
        b->cap = cap;
    }
    f = google__protobuf__file_descriptor_proto__unpack(NULL, len, data);
    if (!f)
        return APS_EINVAL;
    if (!f->name || !f->name[0] || !aps__pb_utf8_ok(f->name)) {
        google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
        return APS_EINVAL;
    }
    memset(&r->files[r->n_files], 0, sizeof(r->files[0]));
    r->files[r->n_files].data = data;
    r->files[r->n_files].len = len;
    b->fdp[r->n_files] = f;
    r->n_files++;
    return 0;
}

struct name_idx {
    const char *name;
    size_t idx;
};

static int
cmp_name_idx(const void *a, const void *b)
{
    const struct name_idx *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    if (c)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Fills r->by_name (file indices by name, then by set order); needs every
 * files[i].name set. */
static int
sort_by_name(aps_refl *r)
{
    struct name_idx *tmp = malloc((r->n_files ? r->n_files : 1) * sizeof(*tmp));

    if (!tmp)
        return APS_ENOMEM;
    for (size_t i = 0; i < r->n_files; i++) {
        tmp[i].name = r->files[i].name;
        tmp[i].idx = i;
    }
    qsort(tmp, r->n_files, sizeof(*tmp), cmp_name_idx);
    for (size_t i = 0; i < r->n_files; i++)
        r->by_name[i] = tmp[i].idx;
    free(tmp);
    return 0;
}

static int
find_file(const aps_refl *r, const char *name, size_t *idx)
{
    size_t lo = 0, hi = r->n_files;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(r->files[r->by_name[mid]].name, name);

        if (c == 0) {
            *idx = r->by_name[mid];
            return 1;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* Drops files whose name an earlier file has; keeps set order. */
static int
dedupe_files(struct build *b)
{
    aps_refl *r = b->r;
    size_t *keep_as, n = 0;

    for (size_t i = 0; i < r->n_files; i++) {
        r->files[i].name = strdup(b->fdp[i]->name);
        if (!r->files[i].name)
            return APS_ENOMEM;
    }
    r->by_name = malloc((r->n_files ? r->n_files : 1) * sizeof(size_t));
    keep_as = calloc(r->n_files ? r->n_files : 1, sizeof(size_t));
    if (!r->by_name || !keep_as) {
        free(keep_as);
        return APS_ENOMEM;
    }
    if (sort_by_name(r) != 0) {
        free(keep_as);
        return APS_ENOMEM;
    }
    /* keep_as[i] = 1 if file i is the first of its name. */
    for (size_t k = 0; k < r->n_files; k++) {
        keep_as[r->by_name[k]] =
            k == 0 || strcmp(r->files[r->by_name[k - 1]].name, r->files[r->by_name[k]].name) != 0;
    }
    for (size_t i = 0; i < r->n_files; i++) {
        if (!keep_as[i]) {
            free(r->files[i].name);
            google__protobuf__file_descriptor_proto__free_unpacked(b->fdp[i], NULL);
            continue;
        }
        r->files[n] = r->files[i];
        b->fdp[n] = b->fdp[i];
        n++;
    }
    free(keep_as);
    r->n_files = n;
    return sort_by_name(r);
}

static char *
join(const char *prefix, const char *name)
{
    size_t lp = prefix ? strlen(prefix) : 0, ln = strlen(name);
    char *s = malloc(lp + 1 + ln + 1);

    if (!s)
        return NULL;
    if (lp) {
        memcpy(s, prefix, lp);
        s[lp++] = '.';
    }
    memcpy(s + lp, name, ln + 1);
    return s;
}

/* Adds a symbol; takes ownership of `name` (freed on failure). */
static int
add_sym(aps_refl *r, char *name, size_t file, enum sym_kind kind)
{
    if (!name)
        return APS_ENOMEM;
    /* A name that is not UTF-8 could never be asked for (requests are
     * checked) nor listed (a client refuses the response), nor one with an
     * empty part ("", ".M", "p..M": a part made of NUL bytes reads as
     * empty here, found by the fuzzer): refuse the set. */
    size_t n = strlen(name);
    if (!aps__pb_utf8_ok(name) || n == 0 || name[0] == '.' || name[n - 1] == '.' ||
        strstr(name, "..") != NULL) {
        free(name);
        return APS_EINVAL;
    }
    if (r->n_syms == r->cap_syms) {
        size_t cap = r->cap_syms ? r->cap_syms * 2 : 256;
        void *p = realloc(r->syms, cap * sizeof(*r->syms));

        if (!p) {
            free(name);
            return APS_ENOMEM;
        }
        r->syms = p;
        r->cap_syms = cap;
    }
    r->syms[r->n_syms].name = name;
    r->syms[r->n_syms].file = file;
    r->syms[r->n_syms].kind = kind;
    r->n_syms++;
    return 0;
}

static int
add_ext(aps_refl *r, const Google__Protobuf__FieldDescriptorProto *f, size_t file)
{
    const char *extendee = f->extendee;

    if (!extendee || !f->has_number)
        return APS_EINVAL;
    if (extendee[0] == '.')
        extendee++;
    if (r->n_exts == r->cap_exts) {
        size_t cap = r->cap_exts ? r->cap_exts * 2 : 16;
        void *p = realloc(r->exts, cap * sizeof(*r->exts));

        if (!p)
            return APS_ENOMEM;
        r->exts = p;
        r->cap_exts = cap;
    }
    r->exts[r->n_exts].extendee = strdup(extendee);
    if (!r->exts[r->n_exts].extendee)
        return APS_ENOMEM;
    r->exts[r->n_exts].number = f->number;
    r->exts[r->n_exts].file = file;
    r->n_exts++;
    return 0;
}

/* A field or extension named inside `scope`. */
static int
add_fields(aps_refl *r, const char *scope, Google__Protobuf__FieldDescriptorProto **fields,
           size_t n, size_t file, int extensions)
{
    for (size_t i = 0; i < n; i++) {
        int rc;

        if (!fields[i]->name)
            return APS_EINVAL;
        if ((rc = add_sym(r, join(scope, fields[i]->name), file, SYM_FIELD)) != 0)
            return rc;
        if (extensions && (rc = add_ext(r, fields[i], file)) != 0)
            return rc;
    }
    return 0;
}

static int
add_enums(aps_refl *r, const char *scope, Google__Protobuf__EnumDescriptorProto **enums, size_t n,
          size_t file)
{
    for (size_t i = 0; i < n; i++) {
        int rc;

        if (!enums[i]->name)
            return APS_EINVAL;
        if ((rc = add_sym(r, join(scope, enums[i]->name), file, SYM_ENUM)) != 0)
            return rc;
    }
    return 0;
}

static int
add_message(aps_refl *r, const char *scope, const Google__Protobuf__DescriptorProto *m, size_t file,
            int depth)
{
    char *name;
    int rc;

    if (!m->name || depth > MAX_NESTING)
        return APS_EINVAL;
    name = join(scope, m->name);
    if ((rc = add_sym(r, name, file, SYM_MESSAGE)) != 0)
        return rc;
    /* `name` now belongs to r->syms; r->syms may move, the string not. */
    if ((rc = add_fields(r, name, m->field, m->n_field, file, 0)) != 0)
        return rc;
    if ((rc = add_fields(r, name, m->extension, m->n_extension, file, 1)) != 0)
        return rc;
    if ((rc = add_enums(r, name, m->enum_type, m->n_enum_type, file)) != 0)
        return rc;
    for (size_t i = 0; i < m->n_nested_type; i++) {
        if ((rc = add_message(r, name, m->nested_type[i], file, depth + 1)) != 0)
            return rc;
    }
    return 0;
}

static int
index_file(aps_refl *r, const Google__Protobuf__FileDescriptorProto *f, size_t file)
{
    const char *pkg = f->package && f->package[0] ? f->package : NULL;
    struct refl_file *rf = &r->files[file];
    int rc;

    if (f->n_dependency) {
        rf->deps = malloc(f->n_dependency * sizeof(size_t));
        if (!rf->deps)
            return APS_ENOMEM;
    }
    for (size_t i = 0; i < f->n_dependency; i++) {
        if (!find_file(r, f->dependency[i], &rf->deps[i]))
            return APS_ENOENT;
        rf->n_deps++;
    }
    for (size_t i = 0; i < f->n_message_type; i++) {
        if ((rc = add_message(r, pkg, f->message_type[i], file, 0)) != 0)
            return rc;
    }
    if ((rc = add_enums(r, pkg, f->enum_type, f->n_enum_type, file)) != 0)
        return rc;
    if ((rc = add_fields(r, pkg, f->extension, f->n_extension, file, 1)) != 0)
        return rc;
    for (size_t i = 0; i < f->n_service; i++) {
        const Google__Protobuf__ServiceDescriptorProto *s = f->service[i];
        char *sname;

        if (!s->name)
            return APS_EINVAL;
        sname = join(pkg, s->name);
        if ((rc = add_sym(r, sname, file, SYM_SERVICE)) != 0)
            return rc;
        for (size_t k = 0; k < s->n_method; k++) {
            if (!s->method[k]->name)
                return APS_EINVAL;
            if ((rc = add_sym(r, join(sname, s->method[k]->name), file, SYM_METHOD)) != 0)
                return rc;
        }
    }
    return 0;
}

static int
cmp_sym(const void *a, const void *b)
{
    const struct refl_sym *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    if (c)
        return c;
    return x->file < y->file ? -1 : x->file > y->file;
}

static int
cmp_ext(const void *a, const void *b)
{
    const struct refl_ext *x = a, *y = b;
    int c = strcmp(x->extendee, y->extendee);

    if (c)
        return c;
    if (x->number != y->number)
        return x->number < y->number ? -1 : 1;
    return x->file < y->file ? -1 : x->file > y->file;
}

/* Sorts the symbol and extension tables, keeping the first definition
 * (lowest file index) of a name defined twice, and lists the services. */
static int
finish_tables(aps_refl *r)
{
    size_t n = 0;

    if (r->n_syms)
        qsort(r->syms, r->n_syms, sizeof(*r->syms), cmp_sym);
    for (size_t i = 0; i < r->n_syms; i++) {
        if (n && strcmp(r->syms[n - 1].name, r->syms[i].name) == 0) {
            free(r->syms[i].name);
            continue;
        }
        r->syms[n++] = r->syms[i];
    }
    r->n_syms = n;

    n = 0;
    if (r->n_exts)
        qsort(r->exts, r->n_exts, sizeof(*r->exts), cmp_ext);
    for (size_t i = 0; i < r->n_exts; i++) {
        if (n && r->exts[n - 1].number == r->exts[i].number &&
            strcmp(r->exts[n - 1].extendee, r->exts[i].extendee) == 0) {
            free(r->exts[i].extendee);
            continue;
        }
        r->exts[n++] = r->exts[i];
    }
    r->n_exts = n;

    for (size_t i = 0; i < r->n_syms; i++)
        r->n_services += r->syms[i].kind == SYM_SERVICE;
    r->services = malloc((r->n_services ? r->n_services : 1) * sizeof(char *));
    if (!r->services)
        return APS_ENOMEM;
    n = 0;
    for (size_t i = 0; i < r->n_syms; i++) {
        if (r->syms[i].kind == SYM_SERVICE)
            r->services[n++] = r->syms[i].name;
    }
    return 0;
}

int
aps_refl_create(const unsigned char *fdset, size_t len, aps_refl **out)
{
    struct build b = {0};
    aps_refl *r;
    int rc;

    *out = NULL;
    if (!fdset && len)
        return APS_EINVAL;
    r = calloc(1, sizeof(*r));
    if (!r)
        return APS_ENOMEM;
    b.r = r;
    r->blob = malloc(len ? len : 1);
    if (!r->blob) {
        rc = APS_ENOMEM;
        goto fail;
    }
    if (len)
        memcpy(r->blob, fdset, len);
    if ((rc = split_set(r->blob, r->blob + len, collect_file, &b)) != 0)
        goto fail;
    if ((rc = dedupe_files(&b)) != 0)
        goto fail;
    for (size_t i = 0; i < r->n_files; i++) {
        if ((rc = index_file(r, b.fdp[i], i)) != 0)
            goto fail;
    }
    if ((rc = finish_tables(r)) != 0)
        goto fail;
    for (size_t i = 0; i < r->n_files; i++)
        google__protobuf__file_descriptor_proto__free_unpacked(b.fdp[i], NULL);
    free(b.fdp);
    *out = r;
    return 0;

fail:
    /* dedupe_files frees what it drops and compacts, so fdp[0..n_files)
     * is always exactly the live set. */
    for (size_t i = 0; i < r->n_files; i++)
        google__protobuf__file_descriptor_proto__free_unpacked(b.fdp[i], NULL);
    free(b.fdp);
    aps_refl_destroy(r);
    return rc;
}

void
aps_refl_destroy(aps_refl *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_files; i++) {
        free(r->files[i].name);
        free(r->files[i].deps);
    }
    for (size_t i = 0; i < r->n_syms; i++)
        free(r->syms[i].name);
    for (size_t i = 0; i < r->n_exts; i++)
        free(r->exts[i].extendee);
    free(r->files);
    free(r->by_name);
    free(r->syms);
    free(r->exts);
    free(r->services);
    free(r->blob);
    free(r);
}

size_t
aps_refl_file_count(const aps_refl *r)
{
    return r ? r->n_files : 0;
}

/* ------------------------------------------------------------------ */
/* Lookups                                                              */
/* ------------------------------------------------------------------ */

static const struct refl_sym *
find_sym(const aps_refl *r, const char *name)
{
    size_t lo = 0, hi = r->n_syms;

    if (name[0] == '.')
        name++;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(r->syms[mid].name, name);

        if (c == 0)
            return &r->syms[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* First extension of `type` with number >= `number` (index; n_exts if none). */
static size_t
ext_lower_bound(const aps_refl *r, const char *type, int32_t number)
{
    size_t lo = 0, hi = r->n_exts;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(r->exts[mid].extendee, type);

        if (c < 0 || (c == 0 && r->exts[mid].number < number))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ------------------------------------------------------------------ */
/* Streams and requests                                                 */
/* ------------------------------------------------------------------ */

int
aps_refl_stream_new(const aps_refl *r, aps_refl_stream **out)
{
    aps_refl_stream *st;

    *out = NULL;
    st = calloc(1, sizeof(*st));
    if (!st)
        return APS_ENOMEM;
    st->r = r;
    st->sent = calloc(r->n_files ? r->n_files : 1, 1);
    if (!st->sent) {
        free(st);
        return APS_ENOMEM;
    }
    *out = st;
    return 0;
}

void
aps_refl_stream_free(aps_refl_stream *st)
{
    if (!st)
        return;
    free(st->sent);
    free(st);
}

/* Everything a response points at; freed after packing. */
struct answer {
    Grpc__Reflection__V1__ServerReflectionResponse resp;
    Grpc__Reflection__V1__FileDescriptorResponse fdr;
    Grpc__Reflection__V1__ExtensionNumberResponse enr;
    Grpc__Reflection__V1__ListServiceResponse lsr;
    Grpc__Reflection__V1__ErrorResponse err;
    ProtobufCBinaryData *blobs;
    size_t *order; /* files of a file answer, to mark as sent */
    size_t n_order;
    int32_t *numbers;
    Grpc__Reflection__V1__ServiceResponse *svc;
    Grpc__Reflection__V1__ServiceResponse **svcp;
    char *msg;
};

static int
answer_error(struct answer *a, int code, const char *what, const char *name)
{
    size_t n = strlen(what) + strlen(name) + 8;

    a->msg = malloc(n);
    if (!a->msg)
        return APS_ENOMEM;
    snprintf(a->msg, n, "%s: %s", what, name);
    a->err.error_code = code;
    a->err.error_message = a->msg;
    a->resp.message_response_case = RESP(ERROR_RESPONSE);
    a->resp.error_response = &a->err;
    return 0;
}

/* `root` first (even if sent before), then its imports not yet sent on
 * this stream, breadth-first, each once. Marks nothing yet. */
static int
answer_files(struct answer *a, const aps_refl_stream *st, size_t root)
{
    const aps_refl *r = st->r;
    uint8_t *seen = calloc(r->n_files, 1);
    size_t *queue = malloc(r->n_files * sizeof(size_t));
    size_t head = 0, tail = 0;

    a->order = malloc(r->n_files * sizeof(size_t));
    a->blobs = malloc(r->n_files * sizeof(ProtobufCBinaryData));
    if (!seen || !queue || !a->order || !a->blobs) {
        free(seen);
        free(queue);
        return APS_ENOMEM;
    }
    seen[root] = 1;
    queue[tail++] = root;
    while (head < tail) {
        size_t f = queue[head++];

        if (f == root || !st->sent[f]) {
            a->blobs[a->n_order].data = (uint8_t *)r->files[f].data;
            a->blobs[a->n_order].len = r->files[f].len;
            a->order[a->n_order++] = f;
        }
        for (size_t i = 0; i < r->files[f].n_deps; i++) {
            size_t d = r->files[f].deps[i];

            if (!seen[d]) {
                seen[d] = 1;
                queue[tail++] = d;
            }
        }
    }
    free(seen);
    free(queue);
    a->fdr.n_file_descriptor_proto = a->n_order;
    a->fdr.file_descriptor_proto = a->blobs;
    a->resp.message_response_case = RESP(FILE_DESCRIPTOR_RESPONSE);
    a->resp.file_descriptor_response = &a->fdr;
    return 0;
}

static int
answer_ext_numbers(struct answer *a, const aps_refl *r, const char *type)
{
    const struct refl_sym *s = find_sym(r, type);
    size_t first, n = 0;

    if (!s || s->kind != SYM_MESSAGE)
        return answer_error(a, APS_REFL_NOT_FOUND, "type not found", type);
    if (type[0] == '.')
        type++;
    first = ext_lower_bound(r, type, INT32_MIN);
    while (first + n < r->n_exts && strcmp(r->exts[first + n].extendee, type) == 0)
        n++;
    a->numbers = malloc((n ? n : 1) * sizeof(int32_t));
    if (!a->numbers)
        return APS_ENOMEM;
    for (size_t i = 0; i < n; i++)
        a->numbers[i] = r->exts[first + i].number;
    a->enr.base_type_name = (char *)type;
    a->enr.n_extension_number = n;
    a->enr.extension_number = a->numbers;
    a->resp.message_response_case = RESP(ALL_EXTENSION_NUMBERS_RESPONSE);
    a->resp.all_extension_numbers_response = &a->enr;
    return 0;
}

static int
answer_services(struct answer *a, const aps_refl *r)
{
    size_t n = r->n_services;

    a->svc = malloc((n ? n : 1) * sizeof(*a->svc));
    a->svcp = malloc((n ? n : 1) * sizeof(*a->svcp));
    if (!a->svc || !a->svcp)
        return APS_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        grpc__reflection__v1__service_response__init(&a->svc[i]);
        a->svc[i].name = (char *)r->services[i];
        a->svcp[i] = &a->svc[i];
    }
    a->lsr.n_service = n;
    a->lsr.service = a->svcp;
    a->resp.message_response_case = RESP(LIST_SERVICES_RESPONSE);
    a->resp.list_services_response = &a->lsr;
    return 0;
}

static int
answer(struct answer *a, const aps_refl_stream *st,
       const Grpc__Reflection__V1__ServerReflectionRequest *req)
{
    const aps_refl *r = st->r;
    size_t f;

    switch (req->message_request_case) {
    case REQ(FILE_BY_FILENAME):
        if (!find_file(r, req->file_by_filename, &f))
            return answer_error(a, APS_REFL_NOT_FOUND, "file not found", req->file_by_filename);
        return answer_files(a, st, f);

    case REQ(FILE_CONTAINING_SYMBOL): {
        const struct refl_sym *s = find_sym(r, req->file_containing_symbol);

        if (!s)
            return answer_error(a, APS_REFL_NOT_FOUND, "symbol not found",
                                req->file_containing_symbol);
        return answer_files(a, st, s->file);
    }

    case REQ(FILE_CONTAINING_EXTENSION): {
        const Grpc__Reflection__V1__ExtensionRequest *x = req->file_containing_extension;
        const char *type =
            x->containing_type[0] == '.' ? x->containing_type + 1 : x->containing_type;
        size_t i = ext_lower_bound(r, type, x->extension_number);
        char what[64];

        if (i < r->n_exts && r->exts[i].number == x->extension_number &&
            strcmp(r->exts[i].extendee, type) == 0)
            return answer_files(a, st, r->exts[i].file);
        snprintf(what, sizeof(what), "extension %d not found for type", (int)x->extension_number);
        return answer_error(a, APS_REFL_NOT_FOUND, what, x->containing_type);
    }

    case REQ(ALL_EXTENSION_NUMBERS_OF_TYPE):
        return answer_ext_numbers(a, r, req->all_extension_numbers_of_type);

    case REQ(LIST_SERVICES):
        return answer_services(a, r);

    default:
        return answer_error(a, APS_REFL_UNIMPLEMENTED, "request kind not supported",
                            "set one of file_by_filename, file_containing_symbol, "
                            "file_containing_extension, all_extension_numbers_of_type, "
                            "list_services");
    }
}

static void
answer_free(struct answer *a)
{
    free(a->blobs);
    free(a->order);
    free(a->numbers);
    free(a->svc);
    free(a->svcp);
    free(a->msg);
}

/* What protobuf-c lets through but a protobuf parser must not
 * (pbcheck.h): field number 0, strings that are not UTF-8. */
static int
request_ok(const Grpc__Reflection__V1__ServerReflectionRequest *rq)
{
    if (aps__pb_has_field_zero(&rq->base) || !aps__pb_utf8_ok(rq->host))
        return 0;
    switch (rq->message_request_case) {
    case REQ(FILE_CONTAINING_EXTENSION):
        return !aps__pb_has_field_zero(&rq->file_containing_extension->base) &&
               aps__pb_utf8_ok(rq->file_containing_extension->containing_type);
    case REQ(FILE_BY_FILENAME):
    case REQ(FILE_CONTAINING_SYMBOL):
    case REQ(ALL_EXTENSION_NUMBERS_OF_TYPE):
    case REQ(LIST_SERVICES):
        return aps__pb_utf8_ok(rq->file_by_filename); /* the union's strings */
    default:
        return 1;
    }
}

int
aps_refl_handle(aps_refl_stream *st, const uint8_t *req, size_t req_len, uint8_t **resp,
                size_t *resp_len)
{
    Grpc__Reflection__V1__ServerReflectionRequest *rq;
    struct answer a;
    uint8_t *buf;
    size_t n;
    int rc;

    *resp = NULL;
    *resp_len = 0;
    if (!req && req_len)
        return APS_EINVAL;
    rq = grpc__reflection__v1__server_reflection_request__unpack(NULL, req_len, req);
    if (!rq)
        return APS_EINVAL;
    if (!request_ok(rq)) {
        grpc__reflection__v1__server_reflection_request__free_unpacked(rq, NULL);
        return APS_EINVAL;
    }
    memset(&a, 0, sizeof(a));
    grpc__reflection__v1__server_reflection_response__init(&a.resp);
    grpc__reflection__v1__file_descriptor_response__init(&a.fdr);
    grpc__reflection__v1__extension_number_response__init(&a.enr);
    grpc__reflection__v1__list_service_response__init(&a.lsr);
    grpc__reflection__v1__error_response__init(&a.err);
    a.resp.valid_host = rq->host;
    a.resp.original_request = rq;

    rc = answer(&a, st, rq);
    if (rc == 0) {
        n = grpc__reflection__v1__server_reflection_response__get_packed_size(&a.resp);
        buf = malloc(n ? n : 1);
        if (!buf) {
            rc = APS_ENOMEM;
        } else {
            grpc__reflection__v1__server_reflection_response__pack(&a.resp, buf);
            for (size_t i = 0; i < a.n_order; i++)
                st->sent[a.order[i]] = 1;
            *resp = buf;
            *resp_len = n;
        }
    }
    answer_free(&a);
    grpc__reflection__v1__server_reflection_request__free_unpacked(rq, NULL);
    return rc;
}
