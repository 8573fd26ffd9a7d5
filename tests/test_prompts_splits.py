"""Few-shot prompts and tuning splits: demonstrations form one fixed prefix, never a scored question, each style
renders what it says; dev splits never overlap the data traces or reports use."""

from __future__ import annotations

import pytest

from divcon.backends import Generation
from divcon.demos import demo_questions, demos
from divcon.pipeline import TUNED, Pipeline, PipelineConfig, for_family, prompts_fingerprint, settings_of
from divcon.pipeline import prompts as P
from divcon.tasks import TASKS, get_task
from divcon.tasks.base import Example


def test_gsm8k_dev_is_train_tail_and_never_in_train():
    g = get_task("gsm8k")
    train, dev = g.examples("train"), g.examples("dev")
    assert len(dev) == 7473 - 7000
    assert dev[0].id == "gsm8k-train-7000" and dev[-1].id == "gsm8k-train-7472"
    assert all(int(e.id.rsplit("-", 1)[1]) < 7000 for e in train)
    assert not {e.question for e in train} & {e.question for e in dev}


def test_drop_dev_distill_eval_split_by_passage_and_cover_the_file():
    d = get_task("drop")
    parts = {s: d.examples(s) for s in ("distill", "dev", "eval")}
    passages = {s: {e.context for e in xs} for s, xs in parts.items()}
    assert not passages["dev"] & passages["distill"]
    assert not passages["dev"] & passages["eval"] and not passages["distill"] & passages["eval"]
    assert len(parts["dev"]) >= 150
    shown = sum((e.question, e.context) in demo_questions() for e in d.splits["all"]())
    assert sum(len(xs) for xs in parts.values()) == len(d.splits["all"]()) - shown


def test_no_demonstration_is_a_scored_question_of_any_split():
    shown = demo_questions()
    assert len(shown) == sum(len(demos(f)) for f in P.ANSWER_FORM)
    hits = [(name, split) for name, task in TASKS.items() for split in task.splits
            for e in task.examples(split) if (e.question, e.context) in shown]
    assert hits == []


def test_the_demonstrations_are_one_prefix_shared_by_every_question():
    a = P.solve_messages("How many apples?", None, "math", ["How many red?", "How many in all?"], 4, "working")
    b = P.solve_messages("How far?", None, "math", ["How fast?"], 4, "working")
    assert len(a) == 1 + 2 * 4 + 1
    assert a[:-1] == b[:-1] and a[-1] != b[-1]
    d1 = P.decompose_messages("Q one?", None, "math", 4, shots=4)
    d2 = P.decompose_messages("Q two?", None, "math", 4, shots=4)
    assert d1[:-1] == d2[:-1]
    # each demonstration's answer is what the parser reads back
    assert P.parse_subquestions(d1[2]["content"]) == list(demos("math")[0]["subquestions"])


@pytest.mark.parametrize("family", ["math", "reading", "openqa"])
def test_demonstration_answers_end_with_the_final_line_the_extractor_reads(family):
    task = {"math": "gsm8k", "reading": "drop", "openqa": "bamboogle"}[family]
    for style in P.SOLVE_STYLES:
        msgs = P.solve_messages("Q?", None, family, ["S?"], shots=len(demos(family)), style=style)
        for d, m in zip(demos(family), msgs[2::2]):
            assert m["role"] == "assistant"
            t = get_task(task)
            scored = t.evaluate(m["content"], [d["answer"]])
            assert scored.answer_source == "marker" and scored.metrics[t.primary] == 1.0, (style, m["content"])
            assert not m["content"].endswith("..")


def test_styles_say_what_they_are():
    working = P.solve_messages("Q?", None, "math", ["A?", "B?"], style="working")[-1]["content"]
    short = P.solve_messages("Q?", None, "math", ["A?", "B?"], style="short")[-1]["content"]
    plan = P.solve_messages("Q?", None, "math", ["A?", "B?"], style="plan")[-1]["content"]
    assert P.WORKING["math"] in working and P.WORKING["math"] not in short
    assert plan.startswith("Problem: Q?\n\nPlan:\n1. A?\n2. B?") and "step by step" in plan
    # the zero-shot short style is the original prompt, word for word
    assert short.endswith("Answer the subquestions in order, one by one. Then use those answers to answer the "
                          "original question: Q?\nEnd with a final line of the form: The answer is <number>.")
    demo = P.solve_messages("Q?", None, "math", ["A?"], shots=1, style="working")[2]["content"]
    assert demo.splitlines()[0] == "1. How many clips did Natalia sell in May? She sold half as many as the 48 of " \
                                   "April: 48 / 2 = 24 clips."


def test_a_student_decomposer_is_served_its_bare_training_prompt():
    bare = P.decompose_messages("Q?", None, "math", 4, shots=0)
    assert [m["role"] for m in bare] == ["system", "user"]


def test_prompt_settings_are_checked():
    with pytest.raises(ValueError, match="unknown solve_style"):
        PipelineConfig(solve_style="poem")
    with pytest.raises(ValueError, match="unknown decompose_style"):
        PipelineConfig(decompose_style="poem")
    with pytest.raises(ValueError, match="shots"):
        PipelineConfig(shots=-1)


def test_unset_prompt_settings_take_the_familys_tuned_values_and_runs_record_them():
    two = PipelineConfig(mode="two-stage")
    assert for_family(two, "math").shots == 0 and for_family(two, "math").solve_style == "plan"
    reading = for_family(two, "reading")
    assert (reading.shots, reading.decompose_shots, reading.solve_style) == (2, 2, "plan")
    assert for_family(two, "openqa") == for_family(two, "math")  # not tuned yet: math's values
    # a value given on purpose wins (a trained student's bare prompt stays bare on DROP)
    assert for_family(PipelineConfig(decompose_shots=0), "reading").decompose_shots == 0
    # the run dir records the values that ran, so a change of a family default blocks a resume
    assert settings_of(two, "reading")["shots"] == 2 and settings_of(two, "math")["shots"] == 0
    assert prompts_fingerprint(two, "reading") == prompts_fingerprint(PipelineConfig(**TUNED["reading"]), "reading")
    assert prompts_fingerprint(two, "math") == prompts_fingerprint(PipelineConfig(**TUNED["math"]), "math")


class _Sent:
    """A model that records the messages of every request and answers with one subquestion and a final line."""

    spec = "fake:sent"

    def __init__(self):
        self.sent = []

    def generate(self, requests):
        self.sent += [r.message_dicts() for r in requests]
        return [Generation("1. What is S?\nThe answer is 1.", 0, 0, 0.0, "probe") for _ in requests]


def test_one_pipeline_sends_each_family_its_own_tuned_prompts():
    model = _Sent()
    pipe = Pipeline(PipelineConfig(mode="two-stage"), model)  # type: ignore[arg-type]
    pipe.run_one(Example("q", "Q?", ["1"], context="C."), "reading")
    pipe.run_one(Example("q", "Q?", ["1"]), "math")
    reading_turns, math_turns = [len(m) for m in model.sent[:2]], [len(m) for m in model.sent[2:]]
    assert reading_turns == [2 + 2 * 2] * 2  # system, two demonstrations (user + assistant), the question
    assert math_turns == [2, 2]  # system and the question


def test_a_student_is_served_its_bare_prompt_whatever_its_familys_defaults():
    from types import SimpleNamespace

    teacher, student = _Sent(), _Sent()
    student.identity = SimpleNamespace(files=(("model", "m"), ("lora_adapter", "a")))
    Pipeline(PipelineConfig(mode="two-stage"), teacher, student).run_one(Example("q", "Q?", ["1"], context="C."),
                                                                          "reading")
    assert [len(m) for m in student.sent] == [2] and [len(m) for m in teacher.sent] == [6]  # bare; two demos
    # a value given on purpose still wins, and a student solver gets no demonstrations either
    teacher, student = _Sent(), _Sent()
    student.identity = SimpleNamespace(files=(("model", "m"), ("lora_adapter", "a")))
    pipe = Pipeline(PipelineConfig(mode="two-stage", decompose_shots=1), student, teacher)
    pipe.run_one(Example("q", "Q?", ["1"], context="C."), "reading")
    assert [len(m) for m in teacher.sent] == [4] and [len(m) for m in student.sent] == [2]


def test_computed_style_asks_for_calculated_subquestions():
    plain = P.decompose_messages("Q?", None, "math", 4)[-1]["content"]
    computed = P.decompose_messages("Q?", None, "math", 4, style="computed")[-1]["content"]
    assert P.SUBQUESTION_KIND["math"] in computed and P.SUBQUESTION_KIND["math"] not in plain


def test_fingerprint_covers_exactly_the_prompts_a_run_sends(monkeypatch):
    fp = prompts_fingerprint
    cot, two = PipelineConfig(mode="cot", shots=4), PipelineConfig(mode="two-stage", shots=4, decompose_shots=4)
    assert len(fp(cot, "math")) == 12 and fp(cot, "math") == fp(PipelineConfig(mode="cot", shots=4), "math")
    # every setting that changes what is sent changes it; the family too
    assert fp(cot, "math") != fp(PipelineConfig(mode="cot", shots=0), "math") != fp(cot, "reading")
    variants = [two, PipelineConfig(mode="two-stage", shots=4, decompose_shots=0),
                PipelineConfig(mode="two-stage", shots=4, decompose_shots=4, solve_style="short"),
                PipelineConfig(mode="two-stage", shots=4, decompose_shots=4, decompose_style="computed"),
                PipelineConfig(mode="two-stage", shots=4, decompose_shots=4, max_subquestions=3)]
    assert len({fp(c, "math") for c in variants}) == len(variants)
    assert len({fp(PipelineConfig(mode=m), "math") for m in ("direct", "cot", "two-stage", "dynamic", "auto")}) == 5
    # a decomposer-only change leaves single-stage runs resumable, and changes two-stage ones
    before_cot, before_two = fp(cot, "math"), fp(two, "math")
    monkeypatch.setitem(P.SUBQUESTION_KIND, "math", "Something else.")
    assert fp(cot, "math") == before_cot and fp(two, "math") == before_two  # "plain" does not send it
    monkeypatch.setattr(P, "NO_DECOMPOSITION", "Nothing to split.")
    assert fp(two, "math") != before_two
