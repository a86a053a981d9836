"""The fault suite's judgement, on recorded chats and session bodies: what counts as lost, which
fault a chat belongs to, the recovery time, a session that disagrees with its client, and the
verdict. (The suite's own run against the real stack is tests/chaos/test_chaos_short.py.)"""

from __future__ import annotations

import json

from chaos.checks import Outcome, Phase, attribute, classify, recovery, session_disagreements, wiped
from chaos.load import Chat
from chaos.report import PhaseRow, RunReport, failures, render_json, render_text
from chaos.transcript import TranscriptParser


def chat(prompt: str = "p1", **fields: object) -> Chat:
    c = Chat(client=0, session_id="s", prompt=prompt, started=10.0, ended=11.0, last_activity=11.0)
    for name, value in fields.items():
        setattr(c, name, value)
    return c


def test_an_accepted_chat_without_a_final_event_is_lost() -> None:
    assert classify(chat(status=200, timed_out=True, text="partial")) is Outcome.LOST
    assert classify(chat(status=200, cut=1, resume_refused=404)) is Outcome.LOST
    assert classify(chat(status=None, timed_out=True)) is Outcome.LOST  # no headers before the timeout
    assert classify(chat(status=200, done=True, text="a")) is Outcome.DONE
    assert classify(chat(status=200, error="generation_interrupted")) is Outcome.ERROR
    assert classify(chat(status=503, refusal="broker_unavailable")) is Outcome.REFUSED
    assert classify(chat(status=None)) is Outcome.REFUSED  # connection refused: no answer, nothing accepted


def test_a_chat_belongs_to_the_first_fault_injected_while_it_was_active() -> None:
    phases = [Phase("none", 0.0, 0.0), Phase("worker", 20.0, 20.0), Phase("rabbit", 40.0, 45.0)]
    assert attribute(chat(started=5.0, ended=6.0, last_activity=6.0), phases) == 0
    assert attribute(chat(started=19.5, ended=21.0, last_activity=19.9), phases) == 1  # hit by the kill
    assert attribute(chat(started=25.0, ended=26.0, last_activity=26.0), phases) == 1
    # Silent since 30 s (lost there), timed out at 50 s: not the RabbitMQ fault's.
    assert attribute(chat(started=29.0, ended=50.0, last_activity=30.0, timed_out=True), phases) == 1


def test_recovery_is_the_time_until_operations_keep_succeeding() -> None:
    assert recovery([(10.5, True), (11.0, True)], lifted=10.0) == 0.0
    assert recovery([(10.2, False), (11.0, False), (12.5, True), (13.0, True)], lifted=10.0) == 2.5
    assert recovery([(10.2, True), (11.0, False), (12.0, True)], lifted=10.0) == 2.0  # a relapse counts
    assert recovery([(10.2, True), (14.0, False)], lifted=10.0) is None  # failing when watching stopped
    assert recovery([(9.0, False), (10.5, True)], lifted=10.0) == 0.0  # before the lift: the fault itself


def test_a_session_that_agrees_with_its_client() -> None:
    chats = [
        chat("q1", status=200, done=True, text="answer one"),
        chat("q2", status=503, refusal="broker_unavailable"),
        chat("q3", status=200, error="generation_interrupted", text="half"),
        chat("q4", status=200, error="no_model_node", text=""),
    ]
    turns = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "answer one"},
        {"role": "user", "content": "q3"},
        {"role": "assistant", "content": "half"},
    ]
    assert session_disagreements(chats, turns) == []


def test_disagreements_are_found() -> None:
    full = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "the whole answer"}]
    interrupted = chat("q1", status=200, error="generation_interrupted", text="the who")
    (problem,) = session_disagreements([interrupted], full)
    assert problem.chat is interrupted and "got 7 chars, the session has 16" in problem.message
    twice = full + full
    done = chat("q1", status=200, done=True, text="the whole answer")
    assert "recorded 2 times" in session_disagreements([done], twice)[0].message
    refused = chat("q1", status=503, refusal="broker_unavailable")
    assert "yet recorded" in session_disagreements([refused], full)[0].message
    assert "not recorded" in session_disagreements([done], [])[0].message
    stranger = session_disagreements([], full)
    assert stranger[0].chat is None and "never sent" in stranger[0].message
    seen_twice = ["event 3 delivered again"]
    repeated = chat("q1", status=200, done=True, text="the whole answer", anomalies=seen_twice)
    assert "delivered again" in session_disagreements([repeated], full)[0].message


def test_a_lost_chat_is_not_compared_but_fails_the_run() -> None:
    lost = chat("q1", status=200, timed_out=True, text="par")
    assert session_disagreements([lost], [{"role": "user", "content": "q1"}]) == []
    report = RunReport([PhaseRow("RabbitMQ", accepted=10, done=9, lost=1)], sessions=3, ended=3)
    assert failures(report) == ["RabbitMQ: 1 lost chat(s)"]
    assert "**1**" in render_text(report) and "FAIL" in render_text(report)


def test_the_verdict() -> None:
    ok = PhaseRow("worker SIGKILL x2", accepted=10, done=8, recovery=0.4, watched=5.0)
    ok.errors["generation_interrupted"] = 2
    assert failures(RunReport([ok], sessions=4, ended=4)) == []
    assert "PASS" in render_text(RunReport([ok], sessions=4, ended=4))
    slow = PhaseRow("model node down", accepted=5, done=5, recovery=12.0)
    never = PhaseRow("Redis restart", accepted=5, done=4, recovery=None, watched=12.0)
    disagreeing = PhaseRow("one gateway SIGKILL", accepted=5, done=5, disagreements=["s: recorded 2 times"])
    report = RunReport([ok, slow, never, disagreeing], sessions=4, ended=4, unarchived=["s9"], not_ended=1)
    assert failures(report) == [
        "model node down: recovery 12.0s > 10s",
        "Redis restart: not recovered within 12.0s of the fault's end",
        "one gateway SIGKILL: 1 session(s) disagree with their client",
        "1 session(s) could not be ended",
        "1 ended session(s) not archived",
    ]
    body = json.loads(render_json(report))
    assert body["passed"] is False and body["faults"][0]["clean_error"] == {"generation_interrupted": 2}
    assert body["faults"][2]["recovery_seconds"] is None and body["unarchived"] == ["s9"]


def test_sessions_wiped_by_an_empty_redis_are_not_compared() -> None:
    phases = [Phase("none", 0.0, 0.0), Phase("Redis restart", 50.0, 52.0, wipes=True)]
    assert wiped(40.0, None, phases)  # open while Redis lost everything
    assert wiped(40.0, 48.0, phases)  # ended, but maybe not archived yet
    assert not wiped(10.0, 20.0, phases)  # archived long before
    assert not wiped(53.0, None, phases)  # started afterwards
    assert not wiped(40.0, None, [Phase("S3 down", 50.0, 55.0)])


def test_the_transcript_keeps_text_and_ids_and_notes_repeats_and_gaps() -> None:
    parser = TranscriptParser()
    parser.feed(b'id: 0\nevent: token\ndata: {"content":"Hel","seq":0}\n\n: keep-alive\n\nid: 1\nevent: tok')
    parser.feed(b'en\ndata: {"content":"lo","seq":1}\n\n')
    assert parser.text == "Hello" and parser.last_id == 1 and not parser.finished
    # A resumed stream that repeats event 1, then goes on.
    parser.feed(b'id: 1\nevent: token\ndata: {"content":"lo","seq":1}\n\n')
    parser.feed(b'id: 3\nevent: token\ndata: {"content":"!","seq":3}\n\n')
    parser.feed(b'id: 4\nevent: done\ndata: {"request_id":"r1","usage":{}}\n\n')
    assert parser.text == "Hello!" and parser.done and parser.request_id == "r1"
    assert parser.anomalies == ["event 1 delivered again", "events 2-2 skipped"]
    error = TranscriptParser()
    error.feed(b'event: error\ndata: {"error":"no_model_node","message":"x"}\n\n')
    assert error.error == "no_model_node" and error.text == ""
