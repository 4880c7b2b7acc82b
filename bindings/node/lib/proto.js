'use strict';
// Loads proto/apsd/v1/*.proto at run time with @grpc/proto-loader and converts
// between the objects proto-loader produces and the JS values this package
// shows its users.
//
// Naming: proto-loader runs with keepCase: false, so every field is camelCase
// (`day_of_week` -> `dayOfWeek`, `next_run_time` -> `nextRunTime`). On input
// the snake_case spelling is accepted too, so APScheduler keywords and the
// proto/JSON names port unchanged.
//
// Value mapping (both directions, driven by the message descriptors):
//   google.protobuf.Timestamp        <-> Date (input: Date, ISO 8601 string or ms since the epoch)
//   google.protobuf.Duration         <-> number of seconds (fractions allowed)
//   google.protobuf.Struct/Value/ListValue <-> plain JSON values
//   google.protobuf.FieldMask        <-  array of paths
//   apsd.v1.MisfireGraceTime         <-> number of seconds; null = unlimited
//   enums                            <-> the value name without its type prefix
//                                        (`EVENT_TYPE_JOB_ADDED` -> `JOB_ADDED`); the full name is accepted too
//   int64/uint64                     ->  number (sequences and counters stay far below 2**53)
//   bytes                            ->  Buffer
// Unset message fields come out as null, unset members of a oneof are absent,
// repeated fields are arrays and maps are plain objects.

const fs = require('fs');
const path = require('path');
const protoLoader = require('@grpc/proto-loader');

const PROTO_FILES = ['apsd/v1/scheduler.proto', 'apsd/v1/workers.proto'];

const LOADER_OPTIONS = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

// The repository keeps the package in bindings/node and the API in proto/.
function findProtoDir(explicit) {
  const candidates = [];
  if (explicit) candidates.push(explicit);
  if (process.env.APSD_PROTO_DIR) candidates.push(process.env.APSD_PROTO_DIR);
  candidates.push(path.resolve(__dirname, '..', '..', '..', 'proto'));
  candidates.push(path.resolve(__dirname, '..', 'proto'));
  for (const dir of candidates) {
    if (fs.existsSync(path.join(dir, PROTO_FILES[0]))) return dir;
  }
  throw new Error(`apsd: cannot find ${PROTO_FILES[0]} (looked in ${candidates.join(', ')}); ` +
                  'set APSD_PROTO_DIR to the repository\'s proto/ directory');
}

function camelToSnake(s) {
  return s.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
}

function snakeToCamel(s) {
  return s.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

const TYPE_INT64 = new Set(['TYPE_INT64', 'TYPE_UINT64', 'TYPE_SINT64', 'TYPE_FIXED64', 'TYPE_SFIXED64']);

class Schema {
  constructor(protoDir) {
    this.protoDir = findProtoDir(protoDir);
    this.packageDefinition = protoLoader.loadSync(PROTO_FILES, {
      ...LOADER_OPTIONS,
      includeDirs: [this.protoDir],
    });
    this.messages = new Map();
    this.enums = new Map();
    for (const [name, def] of Object.entries(this.packageDefinition)) {
      if (!def || !def.format) continue;
      if (def.format.startsWith('Protocol Buffer 3 DescriptorProto')) this._addMessage(name, def.type);
      else if (def.format.startsWith('Protocol Buffer 3 EnumDescriptorProto')) this._addEnum(name, def.type);
    }
  }

  _addEnum(fullName, desc) {
    const zero = desc.value.find((v) => v.number === 0);
    let prefix = '';
    if (zero && zero.name.endsWith('UNSPECIFIED')) prefix = zero.name.slice(0, -'UNSPECIFIED'.length);
    this.enums.set(fullName, { prefix, names: new Set(desc.value.map((v) => v.name)) });
  }

  _addMessage(fullName, desc) {
    const pkg = fullName.slice(0, fullName.lastIndexOf('.'));
    const nested = new Map((desc.nestedType || []).map((n) => [n.name, n]));
    const fields = new Map();
    const byInput = new Map();
    for (const f of desc.field) {
      const info = {
        name: f.name, // camelCase (keepCase: false)
        snake: camelToSnake(f.name),
        type: f.type,
        repeated: f.label === 'LABEL_REPEATED',
        map: null,
        typeName: null,
      };
      if (f.type === 'TYPE_MESSAGE' || f.type === 'TYPE_ENUM') {
        const entry = nested.get(f.typeName);
        if (entry && entry.options && entry.options.mapEntry) {
          const value = entry.field.find((x) => x.name === 'value');
          info.map = { type: value.type, typeName: value.typeName ? this._resolve(pkg, value.typeName) : null };
          info.repeated = false;
        } else {
          info.typeName = this._resolve(pkg, f.typeName);
        }
      }
      fields.set(info.name, info);
      byInput.set(info.name, info);
      byInput.set(info.snake, info);
    }
    const oneofs = (desc.oneofDecl || []).map((o) => o.name);
    this.messages.set(fullName, { name: fullName, fields, byInput, oneofs });
  }

  _resolve(pkg, typeName) {
    if (typeName.startsWith('.')) return typeName.slice(1);
    if (typeName.includes('.') && (typeName.startsWith('google.') || typeName.startsWith('apsd.'))) return typeName;
    return `${pkg}.${typeName}`;
  }

  service(name) {
    return this.packageDefinition[name];
  }

  // ---- output: proto-loader object -> JS ---------------------------------------------------

  toJs(typeName, obj) {
    if (obj === null || obj === undefined) return typeName === 'apsd.v1.MisfireGraceTime' ? undefined : null;
    switch (typeName) {
      case 'google.protobuf.Timestamp':
        return timestampToDate(obj);
      case 'google.protobuf.Duration':
        return Number(obj.seconds) + (obj.nanos || 0) / 1e9;
      case 'google.protobuf.Value':
        return valueToJs(obj);
      case 'google.protobuf.Struct':
        return structToJs(obj);
      case 'google.protobuf.ListValue':
        return (obj.values || []).map(valueToJs);
      case 'google.protobuf.FieldMask':
        return obj.paths || [];
      case 'apsd.v1.MisfireGraceTime':
        if (obj.unlimited) return null;
        if (obj.duration) return this.toJs('google.protobuf.Duration', obj.duration);
        return undefined;
      default:
        break;
    }
    const msg = this.messages.get(typeName);
    if (!msg) throw new Error(`apsd: unknown message type ${typeName}`);
    const out = {};
    // In declaration order; a oneof's virtual "which member" property is dropped.
    for (const [key, f] of msg.fields) {
      if (!Object.prototype.hasOwnProperty.call(obj, key)) continue; // an unset oneof member
      const v = obj[key];
      if (f.map) {
        const m = {};
        for (const [k, x] of Object.entries(v || {})) m[k] = this._scalarOut(f.map.type, f.map.typeName, x);
        out[key] = m;
      } else if (f.repeated) {
        out[key] = (v || []).map((x) => this._scalarOut(f.type, f.typeName, x));
      } else {
        const conv = this._scalarOut(f.type, f.typeName, v);
        if (conv !== undefined) out[key] = conv;
      }
    }
    return out;
  }

  _scalarOut(type, typeName, v) {
    if (type === 'TYPE_MESSAGE') return this.toJs(typeName, v);
    if (type === 'TYPE_ENUM') return this.enumOut(typeName, v);
    if (TYPE_INT64.has(type)) return Number(v);
    return v;
  }

  enumOut(typeName, v) {
    const e = this.enums.get(typeName);
    if (typeof v === 'string' && e && e.prefix && v.startsWith(e.prefix)) return v.slice(e.prefix.length);
    return v;
  }

  enumIn(typeName, v, where) {
    const e = this.enums.get(typeName);
    if (!e) throw new Error(`apsd: unknown enum ${typeName}`);
    if (typeof v === 'number' && Number.isInteger(v)) return v;
    if (typeof v !== 'string') throw new TypeError(`${where}: expected a ${typeName} name, got ${typeof v}`);
    const up = v.toUpperCase();
    if (e.names.has(up)) return up;
    if (e.names.has(e.prefix + up)) return e.prefix + up;
    throw new TypeError(`${where}: unknown ${typeName} value ${JSON.stringify(v)}`);
  }

  // ---- input: JS -> proto-loader object ----------------------------------------------------

  fromJs(typeName, value, where = typeName.split('.').pop()) {
    switch (typeName) {
      case 'google.protobuf.Timestamp':
        return dateToTimestamp(value, where);
      case 'google.protobuf.Duration':
        return secondsToDuration(value, where);
      case 'google.protobuf.Value':
        return jsToValue(value, where);
      case 'google.protobuf.Struct':
        return jsToStruct(value, where);
      case 'google.protobuf.ListValue':
        if (!Array.isArray(value)) throw new TypeError(`${where}: expected an array`);
        return { values: value.map((x, i) => jsToValue(x, `${where}[${i}]`)) };
      case 'google.protobuf.FieldMask':
        if (!Array.isArray(value)) throw new TypeError(`${where}: expected an array of paths`);
        return { paths: value.map(String) };
      case 'apsd.v1.MisfireGraceTime':
        if (value === null || value === Infinity) return { unlimited: true };
        if (typeof value === 'object' && value !== null && !(value instanceof Date)) break; // the message form
        return { duration: secondsToDuration(value, where) };
      default:
        break;
    }
    const msg = this.messages.get(typeName);
    if (!msg) throw new Error(`apsd: unknown message type ${typeName}`);
    if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Date) {
      throw new TypeError(`${where}: expected an object (${typeName})`);
    }
    const out = {};
    for (const [key, v] of Object.entries(value)) {
      if (v === undefined) continue;
      const f = msg.byInput.get(key) || msg.byInput.get(snakeToCamel(key));
      if (!f) {
        throw new TypeError(`${where}: unknown field ${JSON.stringify(key)} (${typeName} has ` +
                            `${[...msg.fields.keys()].join(', ')})`);
      }
      const w = `${where}.${f.snake}`;
      if (f.map) {
        if (typeof v !== 'object' || v === null) throw new TypeError(`${w}: expected an object`);
        const m = {};
        for (const [k, x] of Object.entries(v)) m[k] = this._scalarIn(f.map.type, f.map.typeName, x, `${w}.${k}`);
        out[f.name] = m;
      } else if (f.repeated) {
        if (!Array.isArray(v)) throw new TypeError(`${w}: expected an array`);
        out[f.name] = v.map((x, i) => this._scalarIn(f.type, f.typeName, x, `${w}[${i}]`));
      } else if (v === null && f.type === 'TYPE_MESSAGE' && f.typeName !== 'apsd.v1.MisfireGraceTime' &&
                 f.typeName !== 'google.protobuf.Value') {
        continue; // null = unset (but a Value null is JSON null, a MisfireGraceTime null is unlimited)
      } else {
        out[f.name] = this._scalarIn(f.type, f.typeName, v, w);
      }
    }
    return out;
  }

  _scalarIn(type, typeName, v, where) {
    if (type === 'TYPE_MESSAGE') return this.fromJs(typeName, v, where);
    if (type === 'TYPE_ENUM') return this.enumIn(typeName, v, where);
    if (TYPE_INT64.has(type)) {
      if (typeof v === 'bigint') return v.toString();
      if (typeof v === 'number' && Number.isInteger(v)) return String(v);
      if (typeof v === 'string' && /^-?\d+$/.test(v)) return v;
      throw new TypeError(`${where}: expected an integer`);
    }
    switch (type) {
      case 'TYPE_STRING':
        if (typeof v === 'number') return String(v);
        if (typeof v !== 'string') throw new TypeError(`${where}: expected a string`);
        return v;
      case 'TYPE_BOOL':
        if (typeof v !== 'boolean') throw new TypeError(`${where}: expected a boolean`);
        return v;
      case 'TYPE_INT32': case 'TYPE_UINT32': case 'TYPE_SINT32': case 'TYPE_FIXED32': case 'TYPE_SFIXED32':
        if (typeof v !== 'number' || !Number.isInteger(v)) throw new TypeError(`${where}: expected an integer`);
        return v;
      case 'TYPE_DOUBLE': case 'TYPE_FLOAT':
        if (typeof v !== 'number') throw new TypeError(`${where}: expected a number`);
        return v;
      case 'TYPE_BYTES':
        return Buffer.isBuffer(v) ? v : Buffer.from(v);
      default:
        return v;
    }
  }
}

// ---- well-known types ----------------------------------------------------------------------

function timestampToDate(ts) {
  const ms = Number(ts.seconds) * 1000 + Math.floor((ts.nanos || 0) / 1e6);
  return new Date(ms);
}

function dateToTimestamp(v, where) {
  let d;
  if (v instanceof Date) d = v;
  else if (typeof v === 'string' || typeof v === 'number') d = new Date(v);
  else throw new TypeError(`${where}: expected a Date, an ISO 8601 string or milliseconds since the epoch`);
  const ms = d.getTime();
  if (Number.isNaN(ms)) throw new TypeError(`${where}: invalid date ${JSON.stringify(v)}`);
  const seconds = Math.floor(ms / 1000);
  let nanos = (ms - seconds * 1000) * 1e6;
  // An ISO string may carry microseconds, which Date drops: keep them.
  if (typeof v === 'string') {
    const m = /T\d{2}:\d{2}:\d{2}\.(\d+)/.exec(v);
    if (m) nanos = Number((m[1] + '000000000').slice(0, 9));
  }
  return { seconds: String(seconds), nanos };
}

function secondsToDuration(v, where) {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new TypeError(`${where}: expected a number of seconds`);
  const sign = v < 0 ? -1 : 1;
  const abs = Math.abs(v);
  let seconds = Math.floor(abs);
  let nanos = Math.round((abs - seconds) * 1e9);
  if (nanos >= 1e9) { seconds += 1; nanos -= 1e9; }
  return { seconds: String(sign * seconds), nanos: sign * nanos };
}

function valueToJs(v) {
  if (!v) return null;
  switch (v.kind) {
    case 'nullValue': return null;
    case 'numberValue': return v.numberValue;
    case 'stringValue': return v.stringValue;
    case 'boolValue': return v.boolValue;
    case 'structValue': return structToJs(v.structValue);
    case 'listValue': return ((v.listValue && v.listValue.values) || []).map(valueToJs);
    default: return null;
  }
}

function structToJs(s) {
  const out = {};
  for (const [k, v] of Object.entries((s && s.fields) || {})) out[k] = valueToJs(v);
  return out;
}

function jsToValue(v, where, depth = 0) {
  if (depth > 64) throw new TypeError(`${where}: nested too deeply (or circular)`);
  if (v === null || v === undefined) return { nullValue: 'NULL_VALUE' };
  switch (typeof v) {
    case 'number':
      if (!Number.isFinite(v)) throw new TypeError(`${where}: ${v} is not JSON-representable`);
      return { numberValue: v };
    case 'string': return { stringValue: v };
    case 'boolean': return { boolValue: v };
    case 'bigint':
      if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
        throw new TypeError(`${where}: ${v} does not fit a JSON number`);
      }
      return { numberValue: Number(v) };
    case 'object':
      if (v instanceof Date) return { stringValue: v.toISOString() };
      if (Array.isArray(v)) return { listValue: { values: v.map((x, i) => jsToValue(x, `${where}[${i}]`, depth + 1)) } };
      if (typeof v.toJSON === 'function') return jsToValue(v.toJSON(), where, depth + 1);
      return { structValue: jsToStruct(v, where, depth + 1) };
    default:
      throw new TypeError(`${where}: a ${typeof v} is not JSON-representable`);
  }
}

function jsToStruct(v, where, depth = 0) {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TypeError(`${where}: expected a plain object`);
  const fields = {};
  for (const [k, x] of Object.entries(v)) {
    if (x === undefined) continue;
    fields[k] = jsToValue(x, `${where}.${k}`, depth + 1);
  }
  return { fields };
}

let shared = null;
function schema(protoDir) {
  if (protoDir) return new Schema(protoDir);
  if (!shared) shared = new Schema();
  return shared;
}

module.exports = { schema, Schema, camelToSnake, snakeToCamel, jsToValue, valueToJs, secondsToDuration };
