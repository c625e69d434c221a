"""Files the scripts write rather than people: write one, or with --check fail when it differs
from what would be written."""


def write_or_check(path, text, check, how):
    """Writes `text` to `path`; with `check`, returns 1 (saying to run `how`) when it differs."""
    if check:
        if open(path).read() != text:
            print(f"FAIL  {path} is not what {how} writes: run it")
            return 1
        return 0
    open(path, "w").write(text)
    return 0
