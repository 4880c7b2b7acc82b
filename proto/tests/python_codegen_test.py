"""The generated Python modules import, and every trigger of the shared
conformance vectors parses as apsd.v1.Trigger JSON unchanged (so the vectors
can go through the API), keeping its keys when printed back."""
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def find_runfile(rel):
    for base in (os.environ.get("TEST_SRCDIR", ""), os.getcwd()):
        for cand in (os.path.join(base, rel), os.path.join(base, "apsd", rel)):
            if os.path.exists(cand):
                return cand
    raise FileNotFoundError(rel)


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(find_runfile("proto/apsd/v1/scheduler_pb2.py")))))

from google.protobuf import json_format  # noqa: E402
from apsd.v1 import scheduler_pb2, scheduler_pb2_grpc  # noqa: E402
from apsd.v1 import workers_pb2, workers_pb2_grpc  # noqa: E402


class GeneratedCode(unittest.TestCase):
    def test_services_and_stubs(self):
        svc = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"]
        self.assertIn("AddJob", svc.methods_by_name)
        self.assertTrue(svc.methods_by_name["SubscribeEvents"].server_streaming)
        self.assertTrue(hasattr(scheduler_pb2_grpc, "SchedulerStub"))
        self.assertTrue(hasattr(workers_pb2_grpc, "WorkersStub"))
        self.assertIn("Workers", workers_pb2.DESCRIPTOR.services_by_name)

    def test_conformance_triggers_parse(self):
        path = None
        for rel in ("external/shared/conformance/triggers.jsonl", "shared/conformance/triggers.jsonl"):
            try:
                path = find_runfile(rel)
                break
            except FileNotFoundError:
                pass
        self.assertIsNotNone(path)
        n = 0
        with open(path) as f:
            for line in f:
                vec = json.loads(line)
                t = json_format.Parse(json.dumps(vec["trigger"]), scheduler_pb2.Trigger())
                kind = t.WhichOneof("kind")
                self.assertEqual(kind, next(iter(vec["trigger"])), vec["id"])
                back = json_format.MessageToDict(t, preserving_proto_field_name=True)
                # Keys survive (zero numbers are omitted by proto3).
                inner = vec["trigger"][kind]
                for k, v in inner.items():
                    if v not in (0, "", [], None):
                        self.assertIn(k, back[kind], vec["id"])
                n += 1
        self.assertEqual(n, 3000)

    def test_json_names_are_snake_case(self):
        job = scheduler_pb2.Job(id="x")
        job.next_run_time.seconds = 1
        job.trigger.cron.day_of_week = "mon"
        d = json_format.MessageToDict(job)
        self.assertIn("next_run_time", d)
        self.assertIn("day_of_week", d["trigger"]["cron"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
