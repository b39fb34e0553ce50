# Two set-up commands for a fresh machine: `make demo` and `make test`. Both create .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test install deps data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Teacher -> student -> KD student on the real-MRI demo set shipped in the package, then the table.
# --resume makes a second `make demo` reuse the finished run instead of refusing the existing directory.
demo: install
	$(BIN)/kdc distill --data demo --acc 4 --out runs/demo --epochs 3 --pretrain-epochs 1 --resume

test: install deps
	$(BIN)/python -m pytest -q

# Debian tools the tests use when present (a test that needs a missing one is skipped with the reason):
# bart, the compressed-sensing baseline (`kdc evaluate --cs`).
deps:
	@command -v bart >/dev/null || ! command -v apt-get >/dev/null || apt-get install -y -qq bart >/dev/null 2>&1 \
		|| { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bart >/dev/null 2>&1; } \
		|| echo "note: could not install Debian's bart; the CS baseline tests will be skipped"

# Real brain MRI volumes shipped inside PyPI packages (installed without their dependencies: only their files are read).
# Colin27 (the validation brain) comes from Debian's mricron-data; without root/apt the last MNI volume validates.
COLIN27 := /usr/share/mricron/templates/ch2.nii.gz
data: install
	$(PIP) --no-deps nilearn==0.14.1 nimare==0.22.1
	@test -f $(COLIN27) || apt-get install -y -qq mricron-data >/dev/null 2>&1 \
		|| { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq mricron-data >/dev/null 2>&1; } \
		|| echo "note: could not install Debian's mricron-data (Colin27); validating on an MNI volume instead"
	test -f data/brain/dataset.json || $(BIN)/kdc data build --out data/brain

clean:
	rm -rf $(VENV) runs
