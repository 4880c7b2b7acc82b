"""Triggers with APScheduler's constructors and keyword names, converted to
the API's Trigger message.

    CronTrigger(second='*/5')                   cron[second='*/5']
    IntervalTrigger(seconds=3)                  interval[0:00:03]
    DateTrigger(run_date=datetime(...))         date[2026-01-01 09:00:00 UTC]
    CalendarIntervalTrigger(months=1, hour=9)   APScheduler 4's
    AndTrigger([...]), OrTrigger([...])         all_of / any_of

`timezone` is an IANA name or a tzinfo (zoneinfo, pytz, datetime.timezone.utc);
unset = the Client's `timezone`, else the daemon's default zone. Naive
datetimes are read in the trigger's zone, else the Client's, else local time.
Instances of APScheduler's own trigger classes are accepted too and converted.
"""
import datetime as _dt

from . import _time
from ._pb import pb

_CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")


class BaseTrigger:
    """Common part: timezone and jitter."""

    kind = None
    timezone = None
    jitter = None

    def to_proto(self, default_tz=None):
        """The apsd.v1.Trigger message (default_tz: the zone for an unset
        timezone and naive datetimes)."""
        t = pb.Trigger()
        self._fill(t, default_tz)
        if self.jitter:
            t.jitter.CopyFrom(_time.to_duration(self.jitter, "jitter"))
        return t

    def _zone(self, default_tz):
        return _time.tz_name(self.timezone) or _time.tz_name(default_tz)

    def _ts(self, value, default_tz, name):
        return _time.to_timestamp(value, self._zone(default_tz), name)

    def __repr__(self):
        return "<%s %s>" % (self.__class__.__name__, self)

    def __eq__(self, other):
        return type(self) is type(other) and self.to_proto("UTC") == other.to_proto("UTC")


class CronTrigger(BaseTrigger):
    """APScheduler's CronTrigger (`trigger='cron'`)."""

    kind = "cron"

    def __init__(self, year=None, month=None, day=None, week=None, day_of_week=None, hour=None,
                 minute=None, second=None, start_date=None, end_date=None, timezone=None,
                 jitter=None, crontab=None):
        self.fields = {}
        for name, value in zip(_CRON_FIELDS, (year, month, day, week, day_of_week, hour, minute,
                                              second)):
            if value is not None:
                self.fields[name] = str(value)
        self.crontab = crontab
        self.start_date = start_date
        self.end_date = end_date
        self.timezone = _time.tz_name(timezone)
        self.jitter = jitter

    @classmethod
    def from_crontab(cls, expr, timezone=None):
        """A 5-field crontab line `minute hour day month day_of_week` (with
        crontab's weekday numbers). APScheduler: CronTrigger.from_crontab."""
        return cls(crontab=expr, timezone=timezone)

    def _fill(self, t, tz):
        c = t.cron
        for name, value in self.fields.items():
            setattr(c, name, value)
        if self.crontab:
            c.crontab = self.crontab
        if self.start_date is not None:
            c.start_date.CopyFrom(self._ts(self.start_date, tz, "start_date"))
        if self.end_date is not None:
            c.end_date.CopyFrom(self._ts(self.end_date, tz, "end_date"))
        c.timezone = self._zone(tz) or ""

    def __str__(self):
        if self.crontab:
            return "cron[crontab='%s']" % self.crontab
        return "cron[%s]" % ", ".join("%s='%s'" % (k, self.fields[k]) for k in _CRON_FIELDS
                                      if k in self.fields)


class IntervalTrigger(BaseTrigger):
    """APScheduler's IntervalTrigger (`trigger='interval'`). Values may be
    fractional (`seconds=0.5`), as a timedelta would take them."""

    kind = "interval"

    def __init__(self, weeks=0, days=0, hours=0, minutes=0, seconds=0, start_date=None,
                 end_date=None, timezone=None, jitter=None, microseconds=0):
        self.parts = dict(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds,
                          microseconds=microseconds)
        self.interval = _dt.timedelta(**self.parts)
        if self.interval == _dt.timedelta(0):  # APScheduler 3: all zero = 1 second
            self.interval = _dt.timedelta(seconds=1)
        self.start_date = start_date
        self.end_date = end_date
        self.timezone = _time.tz_name(timezone)
        self.jitter = jitter

    def _fill(self, t, tz):
        i = t.interval
        if all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 31
               for v in self.parts.values()):
            for k, v in self.parts.items():
                setattr(i, k, v)
        else:  # fractional: whole days, seconds and microseconds
            if any(v < 0 for v in self.parts.values()):
                raise ValueError("interval values must be >= 0")
            i.days, i.seconds, i.microseconds = (self.interval.days, self.interval.seconds,
                                                 self.interval.microseconds)
        if self.start_date is not None:
            i.start_date.CopyFrom(self._ts(self.start_date, tz, "start_date"))
        if self.end_date is not None:
            i.end_date.CopyFrom(self._ts(self.end_date, tz, "end_date"))
        i.timezone = self._zone(tz) or ""

    def __str__(self):
        return "interval[%s]" % self.interval


class DateTrigger(BaseTrigger):
    """APScheduler's DateTrigger (`trigger='date'`): once, at run_date
    (unset = now)."""

    kind = "date"

    def __init__(self, run_date=None, timezone=None):
        self.run_date = run_date
        self.timezone = _time.tz_name(timezone)

    def _fill(self, t, tz):
        d = t.date
        d.SetInParent()
        if self.run_date is not None:
            d.run_date.CopyFrom(self._ts(self.run_date, tz, "run_date"))
        d.timezone = self._zone(tz) or ""

    def __str__(self):
        rd = self.run_date
        if isinstance(rd, _dt.datetime) and rd.tzinfo is not None:
            return "date[%s]" % _time.datetime_repr(rd)
        return "date[%s]" % (rd if rd is not None else "now")


class CalendarIntervalTrigger(BaseTrigger):
    """APScheduler 4's CalendarIntervalTrigger: every years/months/weeks/days
    on the calendar at hour:minute:second local time."""

    kind = "calendar_interval"

    def __init__(self, years=0, months=0, weeks=0, days=0, hour=0, minute=0, second=0,
                 start_date=None, end_date=None, timezone=None):
        self.parts = dict(years=years, months=months, weeks=weeks, days=days, hour=hour,
                          minute=minute, second=second)
        self.start_date = start_date
        self.end_date = end_date
        self.timezone = _time.tz_name(timezone)

    def _fill(self, t, tz):
        c = t.calendar_interval
        for k, v in self.parts.items():
            setattr(c, k, v)
        if self.start_date is not None:
            c.start_date.CopyFrom(self._ts(self.start_date, tz, "start_date"))
        if self.end_date is not None:
            c.end_date.CopyFrom(self._ts(self.end_date, tz, "end_date"))
        c.timezone = self._zone(tz) or ""

    def __str__(self):
        return "calendar_interval[%s, time=%02d:%02d:%02d]" % (
            ", ".join("%s=%d" % (k, self.parts[k]) for k in ("years", "months", "weeks", "days")
                      if self.parts[k]),
            self.parts["hour"], self.parts["minute"], self.parts["second"])


class _Combining(BaseTrigger):
    def __init__(self, triggers, jitter=None):
        self.triggers = [as_trigger(t) for t in triggers]
        self.jitter = jitter

    def _fill(self, t, tz):
        sub = getattr(t, self.kind)
        sub.SetInParent()
        for tr in self.triggers:
            sub.triggers.append(tr.to_proto(tz) if isinstance(tr, BaseTrigger) else tr)

    def __str__(self):
        return "%s[%s]" % (self._label, ", ".join(str(t) for t in self.triggers))


class AndTrigger(_Combining):
    """APScheduler's AndTrigger (`all_of`): the times every trigger agrees on."""
    kind = "all_of"
    _label = "and"


class OrTrigger(_Combining):
    """APScheduler's OrTrigger (`any_of`): the times any trigger fires."""
    kind = "any_of"
    _label = "or"


_ALIASES = {
    "cron": CronTrigger, "interval": IntervalTrigger, "date": DateTrigger,
    "calendarinterval": CalendarIntervalTrigger, "calendar_interval": CalendarIntervalTrigger,
    "and": AndTrigger, "or": OrTrigger, "all_of": AndTrigger, "any_of": OrTrigger,
}


def _from_apscheduler(t):
    """Converts an instance of APScheduler's own trigger classes."""
    name = type(t).__name__
    jitter = getattr(t, "jitter", None)
    if name == "CronTrigger":
        kw = {f.name: str(f) for f in t.fields if not f.is_default}
        return CronTrigger(start_date=t.start_date, end_date=t.end_date, timezone=t.timezone,
                           jitter=jitter, **kw)
    if name == "IntervalTrigger":
        iv = t.interval
        return IntervalTrigger(days=iv.days, seconds=iv.seconds, microseconds=iv.microseconds,
                               start_date=t.start_date, end_date=t.end_date, timezone=t.timezone,
                               jitter=jitter)
    if name == "DateTrigger":
        tz = None
        try:
            tz = _time.tz_name(t.run_date.tzinfo)
        except TypeError:
            pass
        return DateTrigger(run_date=t.run_date, timezone=tz)
    if name == "AndTrigger":
        return AndTrigger(t.triggers, jitter=jitter)
    if name == "OrTrigger":
        return OrTrigger(t.triggers, jitter=jitter)
    raise TypeError("unsupported APScheduler trigger %s" % name)


def as_trigger(trigger):
    """One of this module's triggers (or an apsd.v1.Trigger message) for a
    trigger object of any accepted kind."""
    if isinstance(trigger, (BaseTrigger, pb.Trigger)):
        return trigger
    if type(trigger).__module__.startswith("apscheduler.triggers"):
        return _from_apscheduler(trigger)
    raise TypeError("Expected a trigger instance or string, got %s instead"
                    % trigger.__class__.__name__)


def make_trigger(trigger, trigger_args):
    """APScheduler's `trigger` argument plus keyword arguments -> a trigger
    object, or None when neither is given (the daemon then runs the job once,
    at next_run_time or now)."""
    if trigger is None:
        if not trigger_args:
            return None
        trigger = "date"
    if isinstance(trigger, str):
        cls = _ALIASES.get(trigger.lower())
        if cls is None:
            raise LookupError('No trigger by the name "%s" was found' % trigger)
        try:
            return cls(**trigger_args)
        except TypeError as e:
            raise TypeError("trigger '%s': %s" % (trigger, e)) from None
    if trigger_args:
        raise TypeError("unexpected keyword arguments with a trigger instance: %s"
                        % ", ".join(sorted(trigger_args)))
    return as_trigger(trigger)


def trigger_to_proto(trigger, default_tz=None):
    if trigger is None:
        return None
    if isinstance(trigger, pb.Trigger):
        return trigger
    return trigger.to_proto(default_tz)


def from_proto(t):
    """A trigger object for an apsd.v1.Trigger message (a stored job's
    effective trigger: aware datetimes in the trigger's zone)."""
    kind = t.WhichOneof("kind")
    jitter = _time.from_duration(t.jitter) if t.HasField("jitter") else None
    if kind == "cron":
        c = t.cron
        kw = {f: getattr(c, f) for f in _CRON_FIELDS if getattr(c, f)}
        tr = CronTrigger(crontab=c.crontab or None, timezone=c.timezone or None, jitter=jitter,
                         start_date=_time.opt_timestamp(c, "start_date", c.timezone),
                         end_date=_time.opt_timestamp(c, "end_date", c.timezone), **kw)
    elif kind == "interval":
        i = t.interval
        tr = IntervalTrigger(weeks=i.weeks, days=i.days, hours=i.hours, minutes=i.minutes,
                             seconds=i.seconds, microseconds=i.microseconds,
                             timezone=i.timezone or None, jitter=jitter,
                             start_date=_time.opt_timestamp(i, "start_date", i.timezone),
                             end_date=_time.opt_timestamp(i, "end_date", i.timezone))
    elif kind == "date":
        d = t.date
        tr = DateTrigger(run_date=_time.opt_timestamp(d, "run_date", d.timezone),
                         timezone=d.timezone or None)
    elif kind == "calendar_interval":
        c = t.calendar_interval
        tr = CalendarIntervalTrigger(years=c.years, months=c.months, weeks=c.weeks, days=c.days,
                                     hour=c.hour, minute=c.minute, second=c.second,
                                     timezone=c.timezone or None,
                                     start_date=_time.opt_timestamp(c, "start_date", c.timezone),
                                     end_date=_time.opt_timestamp(c, "end_date", c.timezone))
    elif kind in ("all_of", "any_of"):
        cls = AndTrigger if kind == "all_of" else OrTrigger
        tr = cls([from_proto(s) for s in getattr(t, kind).triggers], jitter=jitter)
    else:
        return None
    if kind not in ("all_of", "any_of", "date"):
        tr.jitter = jitter
    return tr
