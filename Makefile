# Two set-up commands for a fresh machine: `make demo` and `make test`. Both create .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test deps install data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	# fastMRI's own evaluate.py, Unet and VarNet, to test kdc's metrics and `kdc export MODULE:CLASS` against
	# (tests/data/test_metrics.py, tests/export/test_user_models.py); --no-deps: its package pulls torchvision and
	# pytorch-lightning, which neither uses. `import fastmri.models` needs pandas, requests, pyyaml and tqdm.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps fastmri==0.3.0
	# What `import fastmri.models` imports (tests/compress/test_user_models.py distils fastMRI's VarNet); none pulls torch.
	$(PIP) pandas pyyaml requests tqdm
	touch $@

install: $(VENV)/.installed

# Teacher -> student -> KD student on the real-MRI demo set shipped in the package, then the table.
# --resume makes a second `make demo` reuse the finished run instead of refusing the existing directory.
# --augment scale: without it the teacher's validation PSNR falls every epoch (the validation brain is darker than the
# training templates; docs/distill.md, "Why make demo's validation fell").
demo: install
	$(BIN)/kdc distill --data demo --acc 4 --out runs/demo --epochs 3 --pretrain-epochs 1 --augment scale --resume

# One pytest process runs every test. (It once died with SIGSEGV: OpenVINO Cores freed in creation order left the
# main thread on an unmapped signal stack, and a SIGCHLD handler torch's DataLoader had installed crashed on the next
# subprocess exit; kdc now shares one Core, see kdc.runtime.session.openvino_core.)
test: install deps
	$(BIN)/python -m pytest -q

# Debian tools the tests use: dciodvfy (dicom3tools) validates written DICOM, cmake/ninja/g++ build examples/cpp,
# ismrmrd-tools writes real ISMRMRD files and reconstructs them, libismrmrd-dev (a header, not a command) lets
# examples/cpp read them, bart is the compressed-sensing baseline (`kdc evaluate --cs`).
# Installed only where missing and apt-get exists; tests that need a tool still missing skip with the reason.
DEBIAN_TOOLS := dciodvfy:dicom3tools cmake:cmake ninja:ninja-build g++:g++ \
	ismrmrd_generate_cartesian_shepp_logan:ismrmrd-tools /usr/include/ismrmrd/dataset.h:libismrmrd-dev bart:bart
deps:
	@for pair in $(DEBIAN_TOOLS); do tool=$${pair%%:*}; pkg=$${pair##*:}; \
		command -v $$tool >/dev/null 2>&1 || test -e $$tool || ! command -v apt-get >/dev/null 2>&1 \
		|| apt-get install -y -qq $$pkg >/dev/null 2>&1 \
		|| { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $$pkg >/dev/null 2>&1; } \
		|| echo "note: could not install $$pkg ($$tool); the tests that need it will be skipped"; done

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
