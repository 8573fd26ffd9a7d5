"""Answer filters and metrics on the cases that trip up naive scoring."""

import pytest

from divcon.tasks.answers import extract_math, extract_text, parse_number
from divcon.tasks.metrics import drop_em_f1, drop_score, numeric_em, numeric_lenient, open_em, open_lenient


@pytest.mark.parametrize("text,value", [
    ("1,234", 1234.0), ("$1,234.50", 1234.5), ("-7", -7.0), ("12.5", 12.5), ("3/4", 0.75), ("50%", 50.0),
    ("1,234,567", 1234567.0), (".5", 0.5), ("no number", None), ("\u22123", -3.0),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_numeric_em_is_strict_about_value():
    assert numeric_em("1,234", ["1234"]) == 1.0
    assert numeric_em("12.5", ["12"]) == 0.0
    assert numeric_em("12.0", ["12"]) == 1.0
    assert numeric_em("-3", ["3"]) == 0.0
    assert numeric_em(None, ["3"]) == 0.0


@pytest.mark.parametrize("output,answer,source", [
    ("So 5 + 4 = 9. The answer is 18.", "18", "marker"),
    ("The answer is $1,234.", "$1,234", "marker"),
    ("#### 72", "72", "marker"),
    ("Thus \\boxed{42}.", "42", "marker"),
    ("The answer is 3. Wait, recheck: the answer is 5.", "5", "marker"),
    ("She has 3 apples and buys 4 more, so 7", "7", "last_number"),  # no 'The answer is'
    ("I don't know.", None, "none"),
    ("", None, "none"),
])
def test_extract_math(output, answer, source):
    assert extract_math(output) == (answer, source)


@pytest.mark.parametrize("output,answer", [
    ("The answer is 10 + 90 = 100.", "100"),
    ("The answer is $10 \\times 3 = $30.", "$30"),
    ("Final answer: 3 * 4 = 12 apples", "12 apples"),
    ("The answer is 10 + 90 = 100. Check: 100 - 90 = 10.", "100"),
    ("Thus \\boxed{10+90=100}.", "100"),
    ("The answer is 1,234.", "1,234"),
    ("The answer is 12.5", "12.5"),
    ("\\boxed{42}", "42"),
    ("#### 72", "72"),
])
def test_marked_equation_gives_its_result(output, answer):
    """The value after the last '=' of a marked equation is the answer, not the first operand."""
    assert extract_math(output) == (answer, "marker")


def test_marked_equation_scores_its_result():
    ans, _ = extract_math("So the total is: The answer is 10 + 90 = 100.")
    assert numeric_em(ans, ["100"]) == 1.0 and numeric_em(ans, ["10"]) == 0.0


def test_marker_without_number_falls_back_to_last_number():
    assert extract_math("It costs 20 dollars. The answer is twenty.") == ("20", "last_number")


def test_lenient_counts_any_number_but_strict_does_not():
    out = "First 18 eggs, then 9 left. The answer is 9."
    ans, _ = extract_math(out)
    assert numeric_em(ans, ["18"]) == 0.0
    assert numeric_lenient(out, ["18"]) == 1.0


def test_extract_text():
    assert extract_text("Reasoning...\nThe answer is Pakistanis and Filipinos.") == ("Pakistanis and Filipinos",
                                                                                       "marker")
    assert extract_text("line one\nJames Madison") == ("James Madison", "last_line")
    assert extract_text("   ") == (None, "none")


def test_drop_numbers_and_spans():
    assert drop_em_f1("1,000", "1000") == (1.0, 1.0)
    assert drop_em_f1("1000.0", "1000") == (1.0, 1.0)
    assert drop_em_f1("the Pakistanis", "Pakistanis") == (1.0, 1.0)
    em, f1 = drop_em_f1("Pakistanis and Indians", "Pakistanis and Filipinos")
    assert em == 0.0 and f1 == 0.67
    # a number mismatch scores zero even with overlapping words
    assert drop_em_f1("34 yards", "35 yards") == (0.0, 0.0)
    assert drop_em_f1(["Pakistanis", "Filipinos"], ["Filipinos", "Pakistanis"]) == (1.0, 1.0)
    assert drop_em_f1(None, "3") == (0.0, 0.0)


def test_drop_max_over_golds():
    s = drop_score("Pakistani and Filipino", ["Pakistanis and Filipinos", "Pakistani and Filipino"])
    assert s == {"em": 1.0, "f1": 1.0}
    assert drop_score("19", ["19", "9"]) == {"em": 1.0, "f1": 1.0}
    assert drop_score("4", ["19", "9"]) == {"em": 0.0, "f1": 0.0}


def test_open_qa():
    assert open_em("James Madison.", ["james madison"]) == 1.0
    assert open_em("Madison", ["james madison"]) == 0.0
    assert open_lenient("I think it was James Madison, in 1812", ["james madison"]) == 1.0
    assert open_em(None, ["x"]) == 0.0


# Expected values below were obtained by running a verbatim copy of the official DROP script's ``get_metrics``
# (allennlp-reading-comprehension allennlp_rc/eval/drop_eval.py, F1 on its 0-1 scale) on each pair.
@pytest.mark.parametrize("pred,gold,em,f1", [
    ("12%", "12", 1.0, 1.0),
    ("1,", "1", 1.0, 1.0),
    ("2,5", "25", 1.0, 1.0),
    ("1,000", "1000", 1.0, 1.0),
    ("1,000,000", "1000000", 1.0, 1.0),
    ("$1,000", "1000", 1.0, 1.0),
    ("(5)", "5", 1.0, 1.0),
    ("The 3 cats", "3 cats", 1.0, 1.0),
    ("1,000.5", "1000.5", 0.0, 0.0),
    ("1.5%", "1.5", 0.0, 0.0),
    ("12% of the people", "12 people", 0.0, 0.8),
    ("10-12", "10", 0.0, 0.67),
    (["1,", "2,5"], ["1", "25"], 1.0, 1.0),
    (["Pakistanis", "12%"], ["Filipinos", "12", "Pakistanis"], 0.0, 0.67),
])
def test_drop_matches_official_normalisation_order(pred, gold, em, f1):
    """Expectations come from the official drop_eval.py's behaviour: per token (split on spaces and hyphens) it
    lower-cases, removes punctuation unless the token is a number, *then* normalises numbers, then drops articles.
    So '12%', '1,' and '2,5' become the numbers 12, 1 and 25, and '1,000.5' becomes 10005 (the official quirk)."""
    assert drop_em_f1(pred, gold) == (em, f1)


def test_drop_score_reads_percent_as_number():
    """Official behaviour: '12%' equals the gold '12' once punctuation is gone, so EM and F1 are 1."""
    assert drop_score("12%", ["12", "twelve"]) == {"em": 1.0, "f1": 1.0}


@pytest.mark.parametrize("output,answer,acc", [
    ("7 x 6 = 42. The answer is (B).", "B", 1.0),
    ("The answer is B) 42", "B", 1.0),
    ("Final answer: option B", "B", 1.0),
    ("The answer is C.", "C", 0.0),
    ("So the total is 42.\nThe answer is 42.", "42", 1.0),  # the correct option's value counts
    ("The answer is 42.00", "42.00", 1.0),
    ("The answer is 44.", "44", 0.0),  # another option's value
    ("The answer is a number near 42", "a number near 42", 0.0),  # 'a' is an article here, not choice A
    ("I would pick (D), no, (B)", "B", 1.0),  # no marker: the last parenthesised letter
])
def test_aqua_choice_scoring(output, answer, acc):
    from divcon.tasks import get_task

    scored = get_task("aqua").evaluate(output, ["B", "42"])
    assert (scored.answer, scored.metrics["acc"]) == (answer, acc)


def test_aqua_non_numeric_option_needs_its_text_not_its_first_number():
    from divcon.tasks.metrics import choice_acc

    golds = ["A", "5(√3 + 1)"]
    assert choice_acc("5", golds) == 0.0 and choice_acc("5(√3 + 1)", golds) == 1.0 and choice_acc("A", golds) == 1.0
