"""The original brief's three jobs, APScheduler code unchanged apart from
the import: a cron job every 5 s, a one-shot job 12 s from now, an interval
job every 3 s. Each calls aps_test in this process (through apsd's worker
queue) while apsd stores and fires the jobs.

    APSD_TARGET=127.0.0.1:50051 python3 seed_jobs.py [SECONDS]
"""
import datetime
import sys
import time

from apsd import RemoteScheduler as BackgroundScheduler  # was: from apscheduler.schedulers.background import BackgroundScheduler


def aps_test(x):
    print(datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S'), x, flush=True)


scheduler = BackgroundScheduler()
# 每隔5s的任务
scheduler.add_job(func=aps_test, args=('定时任务',), trigger='cron', second='*/5')
# 12s后
scheduler.add_job(func=aps_test, args=('一次性任务',),
                  next_run_time=datetime.datetime.now() + datetime.timedelta(seconds=12))
# 每3s
scheduler.add_job(func=aps_test, args=('循环任务',), trigger='interval', seconds=3)
scheduler.start()
scheduler.print_jobs()

time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 30)
scheduler.shutdown()
