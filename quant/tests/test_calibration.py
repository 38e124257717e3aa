import pytest

from mobilellm.errors import UserError
from mobilellm.models.tokenizer import Tokenizer
from mobilellm.quant.calibration import DEFAULT_TEXT, calibration_windows


def test_token_id_file(tmp_path):
    f = tmp_path / "ids.txt"
    f.write_text(" ".join(str(i % 500 + 3) for i in range(300)))
    windows, src = calibration_windows(f, 512, window=64)
    assert all(w[0] == 1 and len(w) <= 64 for w in windows) and "token ids" in src


def test_text_needs_tokenizer_and_default_text_ships(tmp_path, sp_tokenizer):
    assert DEFAULT_TEXT.is_file() and DEFAULT_TEXT.stat().st_size > 1000
    windows, src = calibration_windows(None, 512, Tokenizer(sp_tokenizer))
    assert windows and "text from" in src
    with pytest.raises(UserError, match="is text but the model has no tokenizer"):
        calibration_windows(DEFAULT_TEXT, 512, None)


def test_random_ids_without_tokenizer():
    windows, src = calibration_windows(None, 512, None)
    assert "seeded random token ids" in src and max(max(w) for w in windows) < 512


@pytest.mark.parametrize("content,msg", [(b"", "is empty"), (b"  \n", "is empty"), (b"\xff\xfe\x00bin", "neither UTF-8"),
                                         (b"1 2 99999", "outside the vocabulary")])
def test_bad_calibration_files(tmp_path, content, msg):
    f = tmp_path / "c.txt"
    f.write_bytes(content)
    with pytest.raises(UserError, match=msg):
        calibration_windows(f, 512, None)
    with pytest.raises(UserError, match="does not exist"):
        calibration_windows(tmp_path / "nope.txt", 512, None)
