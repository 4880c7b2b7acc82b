#!/usr/bin/python3
"""Next-fire-time computations per second of APScheduler's triggers.

The same mix as bench_triggers.c, run with Debian's python3-apscheduler
(3.9.1, pytz). APScheduler 3.9.1 has no calendar-interval trigger, so the
two calendar_interval cases use a port of the CalendarIntervalTrigger that
APScheduler 3.11 added (same algorithm, on 3.9.1's BaseTrigger and pytz).

    /usr/bin/python3 apscheduler_triggers.py [--count N] [--only NAME]

Prints "NAME<TAB>computations/s" per trigger, then "mix" and
"cron_simple_1thread", like bench_triggers.
"""
import argparse
import sys
import time
from datetime import date, datetime, timedelta

import pytz
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

START = datetime(2024, 1, 1, tzinfo=pytz.utc)
# Chains restart from START past this, as in bench_triggers.c.
HORIZON = datetime(2034, 1, 1, tzinfo=pytz.utc)


class CalendarIntervalTrigger(BaseTrigger):
    """APScheduler 3.11's calendar interval trigger on 3.9.1 and pytz.

    Years and months are added keeping the day of the month (repeated
    while that date does not exist), then weeks and days; the wall-clock
    time is fixed. A time in a DST gap skips its date. Without a previous
    fire time the first one is start_date's (the engine then moves on to
    the first one at or after now, which this benchmark does not reach:
    every chain starts at start_date).
    """

    def __init__(self, years=0, months=0, weeks=0, days=0, hour=0, minute=0,
                 second=0, start_date=None, timezone=None):
        self.timezone = pytz.timezone(timezone)
        self.years, self.months, self.weeks, self.days = years, months, weeks, days
        self.hour, self.minute, self.second = hour, minute, second
        self.start_date = start_date.astimezone(self.timezone).date()

    def get_next_fire_time(self, previous_fire_time, now):
        previous = previous_fire_time.date() if previous_fire_time else None
        while True:
            if previous:
                year, month = previous.year, previous.month
                while True:
                    month += self.months
                    year += self.years + (month - 1) // 12
                    month = (month - 1) % 12 + 1
                    try:
                        next_date = date(year, month, previous.day)
                    except ValueError:
                        continue
                    next_date += timedelta(self.days + self.weeks * 7)
                    break
            else:
                next_date = self.start_date
            wall = datetime(next_date.year, next_date.month, next_date.day,
                            self.hour, self.minute, self.second)
            try:
                return self.timezone.localize(wall, is_dst=None)
            except pytz.AmbiguousTimeError:
                return self.timezone.localize(wall, is_dst=True)
            except pytz.NonExistentTimeError:
                previous = next_date


def cron(tz, **fields):
    return CronTrigger(timezone=tz, **fields)


def interval(tz, **parts):
    return IntervalTrigger(start_date=START, timezone=tz, **parts)


CASES = [
    ("cron_simple_utc", lambda: cron("UTC", minute="*/5")),
    ("cron_weekdays_new_york",
     lambda: cron("America/New_York", day_of_week="mon-fri", hour="9", minute="30")),
    ("cron_last_fri_london",
     lambda: cron("Europe/London", month="6-8", day="last fri", hour="5")),
    ("cron_seconds_lord_howe", lambda: cron("Australia/Lord_Howe", second="*/15")),
    ("cron_2nd_mon_tokyo", lambda: cron("Asia/Tokyo", day="2nd mon", hour="10", minute="0")),
    ("cron_week_berlin",
     lambda: cron("Europe/Berlin", week="*/2", day_of_week="sat", hour="8")),
    ("cron_hours_sao_paulo", lambda: cron("America/Sao_Paulo", hour="0-23/3", minute="15")),
    ("interval_90m_tokyo", lambda: interval("Asia/Tokyo", hours=1, minutes=30)),
    ("interval_7d_new_york", lambda: interval("America/New_York", days=7)),
    ("calendar_monthly_berlin",
     lambda: CalendarIntervalTrigger(months=1, hour=9, start_date=START,
                                     timezone="Europe/Berlin")),
    ("calendar_daily_sydney",
     lambda: CalendarIntervalTrigger(days=1, hour=2, minute=30, start_date=START,
                                     timezone="Australia/Sydney")),
]


def run_case(make, count):
    """Computes `count` fire times in a chain; returns the seconds taken."""
    trigger = make()
    prev = None
    t0 = time.perf_counter()
    for _ in range(count):
        prev = trigger.get_next_fire_time(prev, prev or START)
        if prev is not None and prev > HORIZON:
            prev = None
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--only")
    args = parser.parse_args()
    total, n = 0.0, 0
    for name, make in CASES:
        if args.only and args.only != name:
            continue
        run_case(make, max(1, args.count // 10))
        secs = run_case(make, args.count)
        print("%s\t%.0f" % (name, args.count / secs), flush=True)
        total += secs
        n += 1
    if n > 1:
        print("mix\t%.0f" % (args.count * n / total))
    if not args.only:
        secs = run_case(CASES[0][1], args.count * 5)
        print("cron_simple_1thread\t%.0f" % (args.count * 5 / secs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
