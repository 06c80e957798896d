"""What a run prints: the scale-out facts appear only when they apply."""

from xdc_core.report import format_clusters, format_train

SIZES = {"k": 4, "sizes_min": 1, "sizes_median": 2.0, "sizes_max": 3}
HISTORY = {"train_loss": [1.0, 0.5], "val_loss": [0.7], "stop_reason": "completed 2 epochs"}


def test_the_gpus_faiss_ran_on_are_named_and_the_cpu_is_not():
    assert format_clusters("video", SIZES | {"device": "gpu:0,1"}).endswith(" on gpu:0,1")
    assert format_clusters("video", SIZES | {"device": "cpu"}) == "video clusters k=4 1/2/3"


def test_data_parallel_training_says_on_how_many_processes():
    assert "on 8 processes" in format_train("audio", HISTORY | {"processes": 8})
    assert "processes" not in format_train("audio", HISTORY | {"processes": 1})
    assert "processes" not in format_train("audio", HISTORY)  # statistics written before the field existed


def test_the_best_held_out_loss_comes_with_its_standard_error():
    r = HISTORY | {"val_loss": [2.9, 2.7, 2.8], "val_loss_se": [0.2, 0.04, 0.1]}
    assert "held-out 2.70 ± 0.04 (" in format_train("audio", r)
    assert "±" not in format_train("audio", HISTORY)  # statistics written before the field existed
