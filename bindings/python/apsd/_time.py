"""datetime <-> google.protobuf.Timestamp, time zones, durations.

Datetimes going out are timezone-aware. Naive datetimes coming in are read in
the given zone (a trigger's `timezone`, or the Client's), else in this
process's local time, as `datetime.now()` means it; that is what APScheduler
does with its default (local) scheduler time zone.
"""
import datetime as _dt
import re

from ._pb import duration_pb2, timestamp_pb2

try:
    import zoneinfo as _zoneinfo
except ImportError:  # Python < 3.9
    _zoneinfo = None

UTC = _dt.timezone.utc
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)

# APScheduler's accepted date strings (apscheduler.util._DATE_REGEX).
_DATE_REGEX = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})"
    r"(?:[ T](?P<hour>\d{1,2}):(?P<minute>\d{1,2}):(?P<second>\d{1,2})"
    r"(?:\.(?P<microsecond>\d{1,6}))?"
    r"(?P<timezone>Z|[+-]\d\d:\d\d)?)?$")


def tz_name(tz):
    """The IANA name of a time zone given as a name, a zoneinfo.ZoneInfo, a
    pytz zone, or datetime.timezone.utc. None stays None."""
    if tz is None or isinstance(tz, str):
        return tz
    for attr in ("key", "zone"):  # zoneinfo, pytz
        name = getattr(tz, attr, None)
        if isinstance(name, str) and name:
            return name
    if isinstance(tz, _dt.tzinfo):
        off = tz.utcoffset(None) if isinstance(tz, _dt.timezone) else None
        if off is not None:
            if off == _dt.timedelta(0):
                return "UTC"
            hours, rem = divmod(int(off.total_seconds()), 3600)
            if rem == 0:
                return "Etc/GMT%+d" % -hours  # POSIX sign: Etc/GMT-9 is UTC+9
        name = tz.tzname(None)
        if name in ("UTC", "GMT"):
            return "UTC"
    raise TypeError("cannot name time zone %r: use an IANA name such as 'Europe/Berlin'" % (tz,))


def zone(tz):
    """A tzinfo for a zone given as a name or a tzinfo (None = None)."""
    if tz is None or isinstance(tz, _dt.tzinfo):
        return tz
    if tz in ("UTC", "Etc/UTC"):
        return UTC
    if _zoneinfo is not None:
        try:
            return _zoneinfo.ZoneInfo(tz)
        except (_zoneinfo.ZoneInfoNotFoundError, ValueError):
            return None
    return None


def aware(value, tz=None, arg_name="datetime"):
    """Converts a datetime, date or date string (APScheduler's formats, or ISO
    8601) to an aware datetime. Naive values are read in `tz` (a name or
    tzinfo), else in local time."""
    if value is None:
        return None
    if isinstance(value, str):
        m = _DATE_REGEX.match(value)
        if m:
            v = m.groupdict()
            tzs = v.pop("timezone")
            value = _dt.datetime(**{k: int(x or 0) for k, x in v.items()})
            if tzs == "Z":
                value = value.replace(tzinfo=UTC)
            elif tzs:
                sign = 1 if tzs[0] == "+" else -1
                h, mi = (int(x) for x in tzs[1:].split(":"))
                value = value.replace(tzinfo=_dt.timezone(sign * _dt.timedelta(hours=h, minutes=mi)))
        else:
            try:
                value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError("%s: invalid date string %r" % (arg_name, value)) from None
    elif isinstance(value, _dt.datetime):
        pass
    elif isinstance(value, _dt.date):
        value = _dt.datetime.combine(value, _dt.time())
    else:
        raise TypeError("Unsupported type for %s: %s" % (arg_name, value.__class__.__name__))
    if value.tzinfo is not None and value.tzinfo.utcoffset(value) is not None:
        return value
    tzinfo = zone(tz)
    if tzinfo is None:
        if tz is not None:
            raise ValueError("%s: unknown time zone %r for a naive datetime" % (arg_name, tz))
        return value.astimezone()  # naive = local time
    if hasattr(tzinfo, "localize"):  # pytz
        return tzinfo.localize(value.replace(tzinfo=None))
    return value.replace(tzinfo=tzinfo)


def to_timestamp(value, tz=None, arg_name="datetime"):
    """A Timestamp for a datetime (see aware())."""
    d = aware(value, tz, arg_name) - _EPOCH
    ts = timestamp_pb2.Timestamp(seconds=d.days * 86400 + d.seconds, nanos=d.microseconds * 1000)
    return ts


def from_timestamp(ts, tz=None):
    """An aware datetime for a Timestamp, in zone `tz` (name or tzinfo; None
    or unknown = UTC)."""
    d = _EPOCH + _dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
    tzinfo = zone(tz) or UTC
    if hasattr(tzinfo, "normalize"):  # pytz
        return tzinfo.normalize(d.astimezone(tzinfo))
    return d.astimezone(tzinfo)


def opt_timestamp(msg, field, tz=None):
    """from_timestamp(msg.field) if the field is set, else None."""
    return from_timestamp(getattr(msg, field), tz) if msg.HasField(field) else None


def to_duration(value, arg_name="duration"):
    """A Duration for seconds (int/float) or a timedelta."""
    if isinstance(value, _dt.timedelta):
        us = (value.days * 86400 + value.seconds) * 1000000 + value.microseconds
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        us = round(value * 1000000)
    else:
        raise TypeError("%s must be a number of seconds or a timedelta, not %s"
                        % (arg_name, value.__class__.__name__))
    sec, rem = divmod(abs(us), 1000000)
    sign = -1 if us < 0 else 1
    return duration_pb2.Duration(seconds=sign * sec, nanos=sign * rem * 1000)


def from_duration(d):
    """Seconds (an int when whole, as APScheduler's values) for a Duration."""
    if d.nanos == 0:
        return d.seconds
    return d.seconds + d.nanos / 1e9


def datetime_repr(value):
    """APScheduler's datetime_repr."""
    return value.strftime("%Y-%m-%d %H:%M:%S %Z") if value else "None"
