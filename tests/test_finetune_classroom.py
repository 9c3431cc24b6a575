"""A short classroom with fine-tuning students (tests/protocol_load.py): their jobs queue and finish, and nobody else's
page raises, leaks or slows to a halt. The full run (20 sessions, 3 fine-tuning) is in the README."""
from browser import run_async


def test_students_fine_tune_in_the_queue_while_the_others_keep_working(monkeypatch):
    import protocol_load
    from protocol_load import classroom

    monkeypatch.setattr(protocol_load, "FINETUNE_QUERY", "model=bert&task=verse&n=64")  # 4 steps: CI machines are small
    r = run_async(classroom(sessions=4, seconds=120, think=2, finetuners=2))
    print(r)
    assert r["errors"] == 0, r["first_errors"]
    assert r["leaks"] == 0, r["first_leaks"]
    assert r["server_foreign_connections"] == [], r
    assert r["finetune_jobs"]["interactions"] >= 1, r  # a job went through the queue and its results were drawn
    assert r["not_finetuning"]["interactions"] >= 10, r
    assert r["not_finetuning"]["median_s"] < 2.0, r["not_finetuning"]  # generous: this test shares its machine
