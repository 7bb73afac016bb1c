"""MedMIXClassifier: expert and modality fusion under missing modalities.

The estimator reads the block layout (``medmix_sklearn/_layout.py``; see
docs/concepts.md) from its input, standardises each feature on the rows where
it is present, replaces every NaN before anything reaches torch, and trains
:class:`MedMIXNetwork` through a private skorch net ``net_``.

Defaults are chosen by measurement: ``benchmarks/bench_quality.py``
(docs/benchmarks/quality.md) compares them with the ablations and with
scikit-learn baselines on the same folds, and
``benchmarks/bench_classifier_speed.py --sweep`` varies them one at a time;
CHANGELOG.md records what those runs decided. Teachers (``teacher=``) are
training-only: alignment heads and cross-fitted soft labels enter the
training loss, and are dropped at the end of ``fit``; with ``unlabeled_value``
set, rows without a label learn from the teacher terms alone
(semi-supervised distillation). ``benchmarks/bench_teachers.py``
(docs/benchmarks/teachers.md) measures what they bring. They are options,
off by default.
"""

from __future__ import annotations

import copy
import logging
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn import get_config
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone, is_classifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import LabelEncoder, StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metadata_routing import MetadataRouter, MethodMapping, process_routing
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_feature_names,
    _check_n_features,
    _check_sample_weight,
    check_array,
    check_is_fitted,
    has_fit_parameter,
    validate_data,
)
from skorch.callbacks import EarlyStopping
from skorch.helper import predefined_split

from .._layout import (
    SEP,
    TABULAR_EXPERT,
    Block,
    blocks_from_mapping,
    check_blocks,
    parse_feature_names,
    strip_transformer_prefixes,
)
from .._missing import block_presence
from ..exceptions import CalibrationWarning, DeviceFallbackWarning, LayoutWarning, MissingModalityWarning
from ._calibration import CALIBRATIONS, blanked_copies, copy_weights, fit_temperatures, n_copies_for, temper
from ._losses import FusionLoss
from ._net import BatchIterator, BlockDataset, EpochLog, FusionNet
from ._network import EXPERT_FUSIONS, MODALITY_FUSIONS, FusionEnsemble, FusionOutput, MedMIXNetwork

_DEFAULT_MODALITY = "features"
# An input at least this wide without layout names could have been a block
# matrix whose layout was lost (the smallest embedding experts are this wide).
_LAYOUT_WARN_WIDTH = 32
#: expert_bottleneck="auto": one principal component per this many training rows of the
#: rarest class (among the rows where the block is present).
_BOTTLENECK_EVENTS_PER_COMPONENT = 1
#: ... but only blocks with more than this many columns per such row are reduced.
_BOTTLENECK_DIMS_PER_EVENT = 10
#: n_members="auto": an ensemble of this many networks when the rarest class has
#: fewer than _ENSEMBLE_BELOW_RAREST labelled training rows, else one network.
_ENSEMBLE_MEMBERS = 5
_ENSEMBLE_BELOW_RAREST = 200
#: hidden_dim="auto": the token width, and the narrower one of small data (an ensemble).
_HIDDEN_DIM = 64
_SMALL_DATA_HIDDEN_DIM = 32
_ALIGN = "align"
_CONTRASTIVE = "contrastive"
_AUTO = "auto"
#: Temperature of the contrastive (InfoNCE) alignment's cosine similarities.
_CONTRASTIVE_TEMPERATURE = 0.1


class MedMIXClassifier(ClassifierMixin, BaseEstimator):
    """Multimodal classifier that fuses experts within, and modalities across, what is present.

    Each expert block (``{modality}__{expert}__{k}`` columns) becomes one token;
    a per-sample gate weights the experts present in each modality; the
    modality tokens are weighted per sample over the modalities present, and
    the fused representation feeds a linear head. Absent blocks (all NaN) are
    masked, never imputed; a row with no modality present gets the learned
    prior. NaN cells inside a present tabular block are imputed with the
    feature mean and flagged by a missing-indicator input.

    Parameters
    ----------
    hidden_dim : "auto" or int, default="auto"
        Width of the expert, modality and fused tokens. ``"auto"``: 64, or
        32 on small data (when ``n_members`` resolves to an ensemble).
    expert_fusion : {"gate", "mean"}, default="gate"
        Pooling of a modality's experts: a learned per-sample softmax gate over
        the experts present, or their plain mean.
    modality_fusion : {"attention", "gate", "mean", "concat"}, default="attention"
        Fusion over the modalities present. "attention": a learned query
        gives per-sample weights over the modality tokens; each modality's
        token, scaled by its weight, keeps its own slot, and the slots are
        concatenated with the presence mask (so an informative availability
        pattern is used, while absent modalities stay masked). "gate": a gated
        (attention-MIL) pooling into one vector; "mean": the plain mean;
        "concat": unweighted concatenation with zeros and the presence mask
        (the unmasked baseline; its ``explain`` modality weights are uniform
        over what is present).
    modality_dropout : float, default=0.2
        Probability, during training, of dropping each present modality of a
        row (at least one is always kept).
    expert_bottleneck : "auto", int or None, default="auto"
        Width cap of each expert (embedding) block before its encoder. A
        block wider than the cap is replaced by its leading principal
        components (computed in ``fit`` on the standardised training rows
        where the block is present, each component scaled to unit variance).
        ``"auto"`` reduces a block only when it has more than 10 columns per
        training row of the rarest class among the rows where it is present,
        and then keeps one component per such row (an events-per-variable
        rule): with 60 training deaths a 1,024-d slide embedding becomes 60
        inputs, while a 384-d text embedding with 160 rows of its rarer class
        stays whole. On MMIST-ccRCC (618 patients, 12% events; 5 folds x 5
        seeds, docs/benchmarks/mmist_ccrcc.md) all five modalities reach 0.847
        AUROC with it, 0.824 with one component per 5 such rows and 0.782
        with every block whole. An int caps every expert block at that many
        components; None keeps every block whole. Tabular blocks are never
        reduced.
    n_members : "auto" or int, default="auto"
        Number of networks trained and averaged (their predicted
        probabilities). Each member starts from its own initialisation, sees
        its own shuffling and dropout, and holds out its own early-stopping
        split, so averaging them also averages over the validation splits
        (cross-validated early stopping). ``"auto"`` trains 5 members when the
        rarest class has fewer than 200 labelled training rows, and one
        otherwise: with few events a single network's early stopping rests on
        a handful of validation rows and its score varies from seed to seed
        by more than the differences between fusion choices. On MMIST-ccRCC
        (about 60 deaths per training fold) five members raise the AUROC of
        every modality subset (docs/benchmarks/mmist_ccrcc.md). Fitting
        costs ``n_members`` times as much; predicting runs every member.
        ``partial_fit`` started from scratch trains one network. The same
        small-data regime narrows the tokens (``hidden_dim="auto"``) and adds
        the linear path (``linear_path="auto"``).
    linear_path : "auto" or bool, default="auto"
        Add a linear function of the inputs (the standardised, possibly
        reduced, blocks of the modalities kept, with the missing indicators)
        to the fused head's logits: the network then contains a logistic
        regression on its inputs, which on small data is hard to beat, and
        the fused layers only have to learn what that misses. The linear
        weights start at zero. ``"auto"``: on exactly when ``n_members``
        resolves to an ensemble (the rarest class has fewer than 200
        labelled training rows); on MMIST-ccRCC it adds 0.01 AUROC to the
        five-modality ensemble (docs/benchmarks/mmist_ccrcc.md).
    aux_weight : float, default=0.3
        Weight of the auxiliary unimodal heads' loss, which trains each
        modality token to be predictive alone. 0 disables it.
    pattern_prior : bool, default=False
        Add a learned logit bias per availability pattern (the modalities
        present in the row, as observed) to the prediction: the class prior
        given the pattern, for data whose missingness depends on the label
        (sicker patients get more examinations). The fused representation
        sees the presence mask either way; this gives the pattern a direct
        path to the logits that modality dropout does not blur (parameters
        indexed by the observed combination, the idea of Flex-MoE's
        missing-modality bank). The biases start at each pattern's smoothed
        class log-ratio on the training rows. At most 12 modalities.
        ``benchmarks/bench_quality.py`` measures it (docs/benchmarks/quality.md,
        3 seeds): on generated data with missingness by label it lifts AUROC
        from 0.745 to 0.776 at p=0, but costs AUROC and calibration once
        modalities go missing for other reasons (blanked at random at test
        time: 0.650 against 0.666 at p=0.5) and calibration at p=0 (ECE 0.088
        against 0.076), so it is off by default. Use it when missingness depends on the label and will
        keep doing so where the model is used
        (:func:`~medmix_sklearn.model_selection.missingness_dependence` tests
        the training data), and then with ``calibration=None``:
        ``"presence"`` fits its temperatures half on rows blanked at random,
        as if missingness said nothing, which on OpenI with label-dependent
        missingness in training and test raised the ECE at p=0.5 from 0.043
        to 0.092 (docs/benchmarks/mnar_train.md).
    calibration : {"presence", "temperature"} or None, default="presence"
        Temperature scaling fitted after training, on the rows early stopping
        held out (for an ensemble, on every member's held-out rows, each
        scored by the member that held it out; the members share the
        temperatures, and their tempered probabilities are averaged). The
        temperature scales the evidence, not
        the class prior: probabilities are ``softmax((logits - log π) / T +
        log π)`` with ``π = calibration_prior_``, the class shares of the
        training rows, so they sum to 1 and ``T > 1`` moves a row towards
        what the model would say knowing nothing (the class shares), not
        towards equal probabilities. With ``"presence"`` rows with
        different numbers of modalities get different temperatures, so
        their ranking (AUROC) may change.

        - ``"presence"``: one temperature per number of modalities present
          in the row. The held-out rows are copied with their present
          modalities blanked at random (each with a probability drawn
          uniformly from 0 to 1, at least one kept) to simulate modalities
          missing at prediction; ``temperatures_[k]`` is fitted on the
          copies left with ``k`` modalities (a count whose copies come from
          fewer than 20 held-out rows, or fewer than 5 of some class, gets
          the temperature of all copies together). A network that
          grows overconfident as modalities go missing gets ``T > 1`` for
          the rows with few of them. The rows as observed carry half the
          weight, the blanked copies the other half: a deployed model sees
          rows missing what they miss in training as well as rows that lost
          modalities for other reasons, and where missingness depends on the
          label the blanked copies alone would temper that signal away.
        - ``"temperature"``: one temperature per network, fitted on the
          held-out rows as they are (the classic temperature scaling).
        - ``None``: no scaling (``temperatures_`` is None).

        ``"presence"`` is the default because ``benchmarks/bench_quality.py``
        decided it (docs/benchmarks/quality.md, 3 seeds): with modalities
        blanked at prediction it lowers the ECE in most cells (on generated
        data with missingness by label, MCAR p=0.75, from 0.182 to 0.083,
        below late fusion's 0.159) and leaves AUROC level (paired change at
        p=0 at most -0.005 ± 0.008); ``"temperature"`` does not help there.
        It costs one forward pass over about 20 copies of the held-out rows.

        Without held-out rows nothing is calibrated (``temperatures_`` is
        None): with ``early_stopping=False``, or when the validation split is
        impossible (too few rows per class; ``fit`` warns about the split).
        Rows with no modality present (the learned prior) are never scaled.
        ``partial_fit``
        holds out no rows, so it fits no temperatures: started from scratch
        it trains an uncalibrated network (``temperatures_`` None), and
        called on a calibrated classifier it drops ``temperatures_`` (fitted
        to the weights before the update), with a ``CalibrationWarning``;
        ``fit`` again to recalibrate. ``explain``'s weights do not depend on
        it. Model files keep the temperatures (a model file written before
        this option existed loads uncalibrated).
    dropout : float, default=0.1
        Dropout on expert tokens and before the head.
    lr : float, default=1e-3
        AdamW learning rate.
    weight_decay : float, default=1e-4
        AdamW weight decay.
    batch_size : int, default=128
        Mini-batch size.
    max_epochs : int, default=60
        Maximum number of epochs of ``fit``.
    early_stopping : bool, default=True
        Hold out a stratified ``validation_fraction`` of the training rows and
        stop when their loss has not improved for ``patience`` epochs; the best
        epoch's weights are kept. Falls back to training on all rows, with a
        warning, when the split is impossible (too few rows per class).
    validation_fraction : float, default=0.1
        Share of rows held out for early stopping.
    patience : int, default=8
        Epochs without improvement before stopping.
    class_weight : dict, "balanced" or None, default=None
        Per-class weights multiplied into the sample weights.
    teacher : None, "auto", "align", "contrastive", classifier, or a tuple of these, default=None
        Training-only guidance from the teacher blocks of X (columns
        ``teacher__{modality}__...``, which :class:`MultimodalExpertEmbedder`
        fills in ``fit_transform`` only). Whatever is chosen, teacher blocks
        are never inputs of the network: ``predict`` does not read them.

        - ``None``: teacher blocks, if any, are ignored.
        - ``"auto"`` (recommended when X has teacher blocks, above all with
          few labelled rows and many unlabelled ones): the setting chosen
          with ``benchmarks/bench_teachers.py``, given below.
          docs/benchmarks/teachers.md reports what it brings on OpenI.
        - ``"align"``: each teacher block is a regression target for a small
          projection head (``Linear -> GELU -> Linear``) on a student
          representation: the token of the student modality of the same name,
          or the fused representation when the students lack that modality
          (privileged data such as a report written after the image). The
          loss is ``align_weight * (1 - cosine)`` against the teacher
          embedding standardised per feature on the training rows.
        - ``"contrastive"``: the same projections, trained jointly with the
          task by a symmetric InfoNCE loss (weight ``align_weight``, cosine
          similarities at temperature 0.1): each row's projection must pick
          its own teacher embedding among those of the batch, so the student
          learns what distinguishes patients in the teacher's view rather
          than the teacher's average.
        - an unfitted scikit-learn classifier: cloned and cross-fitted inside
          ``fit`` on the training rows, with the student and teacher columns
          as input; its out-of-fold ``predict_proba`` (``teacher_cv`` folds,
          so the soft labels are not overconfident) is distilled into the
          network with weight ``distill_weight`` and temperature
          ``distill_temperature``. Absent modalities reach it as NaN, so it
          must accept NaN: use e.g. ``HistGradientBoostingClassifier`` or a
          Pipeline that starts with ``SimpleImputer``.
        - a tuple combining ``"align"``, ``"contrastive"`` and at most one
          classifier, e.g. ``("align", classifier)``: every term named.

        ``"auto"`` is distillation from a default teacher estimator: mean
        imputation, standardisation and an L2 logistic regression
        (``C=0.1``) on the teacher columns alone, cross-fitted like any
        classifier given here (a classifier given here reads the student and
        the teacher columns). A teacher that also reads the student columns
        learns their weights from the labelled rows alone, and hands that
        noise to the student. On OpenI (student: indication text and age;
        teachers: the report's findings and impression) with 300 labelled
        rows plus 2,600 unlabelled ones, this setting (with
        ``distill_weight=3`` and early stopping on held-out unlabelled rows
        too, see ``unlabeled_value``) adds +0.032 AUROC to the student
        without teacher (10 of 10 seeds), and +0.003 with every row
        labelled; adding ``"align"`` or ``"contrastive"`` to it did not help.
        It fits data whose teacher blocks predict the label better than the
        student's inputs do: on the generator's settings, where a logistic
        on the teacher blocks ranks worse than one on the student columns,
        it fell below the student without teacher (by up to 0.07 AUROC), and
        the classifiers given here that were tried came level with it at
        best; keep ``teacher=None`` there. docs/benchmarks/teachers.md gives the
        figures and what each part contributes.

        A row whose teacher blocks are all NaN gets no teacher term (for
        alignment: each teacher block counts only on the rows where it, and
        the student modality it is aligned from, are present). The heads and
        the cross-fitted teacher are discarded at the end of ``fit``: the
        fitted model holds no teacher weights and costs the same to predict
        and to store as one trained without a teacher. ``partial_fit`` does
        not support teachers.
    unlabeled_value : int, float, str or None, default=None
        Label marking unlabelled rows in ``y`` (scikit-learn's semi-supervised
        convention is -1). Those rows get no supervised loss; they train
        through the teacher terms (the cross-fitted teacher's soft labels,
        predicted for them by the fold models, which never saw them, where
        their teacher blocks are present; the alignment terms) and through
        the consistency of the prediction under modality dropout with the
        prediction on every present modality (``consistency_weight``).
        Unlabelled rows therefore need a ``teacher``: without one they are
        refused. ``classes_`` holds the labelled classes only;
        ``class_weight="balanced"`` and the teacher's folds are computed on
        labelled rows. Early stopping holds out ``validation_fraction`` of
        the labelled rows (stratified) and, when the teacher gives soft
        labels, of the unlabelled rows that have one; the held-out loss
        scores labelled rows against their label and unlabelled rows against
        the teacher's out-of-fold soft label, so that a fit with a few
        hundred labelled rows does not stop on a few dozen of them. With
        only alignment, the unlabelled rows are all trained on and early
        stopping holds out labelled rows only. ``partial_fit`` refuses unlabelled
        rows (it has no teacher). None: every value of ``y`` is a class.
    consistency_weight : float, default=1.0
        Weight of the consistency term on unlabelled rows: ``KL(p_full ||
        p_dropped)`` between the prediction with every present modality (no
        gradient) and the prediction under modality dropout. Unused when
        every row is labelled.
    align_weight : float, default=1.0
        Weight of the alignment terms (``teacher`` with ``"align"`` or
        ``"contrastive"``).
    distill_weight : float, default=3.0
        Weight of the distillation term (``teacher`` with a classifier, or
        ``"auto"``). The supervised term is a mean over the labelled rows of
        a batch and the distillation term a mean over every row with a soft
        label. Chosen on OpenI with 300 labelled and 2,600 unlabelled rows
        (docs/benchmarks/teachers.md compares 1, 3 and 10).
    distill_temperature : float, default=2.0
        Temperature ``T`` of the distillation term, ``T**2 *
        KL(teacher_T || student_T)``; the teacher's probabilities are
        tempered as ``softmax(log(p) / T)``. Higher values soften them.
    teacher_cv : int or cross-validation splitter, default=5
        Folds of the out-of-fold soft labels: an int gives a shuffled
        :class:`~sklearn.model_selection.StratifiedKFold` seeded from
        ``random_state`` (reduced to the size of the smallest class when that
        is smaller).
    blocks : dict, list of Block or None, default=None
        Explicit layout ``{modality: column indices}`` or ``{modality: {expert:
        column indices}}``, or the blocks of a fitted
        :class:`MultimodalExpertEmbedder` (``embedder.blocks_ +
        embedder.teacher_blocks_``), for input without layout column
        names (arrays from a meta-estimator such as ``BaggingClassifier``).
        Overrides names when given. Without both, names with a common
        transformer prefix (``ColumnTransformer``'s ``mm__xray__...``) are
        read without it, and otherwise every column is one tabular modality,
        with a :class:`~medmix_sklearn.exceptions.LayoutWarning` when the
        input is wide enough (32 columns or more) to have been a block matrix
        whose layout was lost.
    device : str, default="auto"
        Torch device; "auto" picks CUDA when available. Resolved in ``fit`` as
        ``device_``.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, shuffling, dropout, modality dropout, the
        validation split and the teacher's folds. Every draw comes from the
        estimator's own generators, never torch's process-wide one, so with an
        int CPU training is reproducible, also when several fits run at once
        in threads (joblib, Optuna, Dask).
    verbose : int, default=0
        Show a tqdm bar over epochs with the losses. Every epoch is also
        logged at INFO level on this module's logger.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    n_features_in_ : int
        Number of input columns.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names, when X had string column names.
    blocks_ : list of Block
        The expert and tabular blocks used as inputs (teacher blocks excluded).
    teacher_blocks_ : list of Block
        The teacher blocks that guided training (empty with ``teacher=None``).
        Only their layout is kept, no values or weights.
    n_unlabeled_ : int
        Unlabelled rows ``fit`` trained on (0 without ``unlabeled_value``).
    modality_names_ : list of str
        Modality names, in the order of the modality weights.
    device_ : str
        The device trained on.
    n_members_ : int
        Networks trained and averaged (see ``n_members``).
    linear_path_ : bool
        Whether the network has the linear path (see ``linear_path``).
    hidden_dim_ : int
        Token width trained with (see ``hidden_dim``).
    temperatures_ : ndarray of shape (n_modalities + 1,) or None
        With ``calibration`` set: ``temperatures_[k]`` tempers the logits of
        every network on rows with ``k`` modalities present
        (``temperatures_[0]`` is 1). None without calibration.
    calibration_prior_ : ndarray of shape (n_classes,) or None
        With ``calibration`` set: the class shares of the labelled training
        rows (weighted by ``sample_weight`` and ``class_weight``) that the
        temperatures shrink towards. None without calibration.
    n_iter_ : int
        Epochs trained (by the first member, when several).
    net_ : skorch.NeuralNet
        The private training wrapper; its ``module_`` is the network.

    Examples
    --------
    >>> import numpy as np
    >>> from medmix_sklearn import MedMIXClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 6)); y = (X[:, 0] > 0).astype(int)
    >>> X[:20, 3:] = np.nan  # modality "b" absent for 20 rows
    >>> clf = MedMIXClassifier(blocks={"a": [0, 1, 2], "b": [3, 4, 5]},
    ...                        max_epochs=5, random_state=0).fit(X, y)
    >>> clf.predict_proba(X).shape
    (60, 2)

    A training-only teacher block (here privileged columns 6-7; from
    :class:`MultimodalExpertEmbedder` they are the ``teacher__`` columns):

    >>> T = X[:, :2] + 0.1 * rng.normal(size=(60, 2))
    >>> layout = {"a": [0, 1, 2], "b": [3, 4, 5], "teacher__notes": [6, 7]}
    >>> clf = MedMIXClassifier(blocks=layout, teacher="align", max_epochs=5,
    ...                        random_state=0).fit(np.hstack([X, T]), y)
    >>> X_new = np.hstack([X, np.full((60, 2), np.nan)])  # no teacher at prediction
    >>> clf.predict_proba(X_new).shape
    (60, 2)
    """

    _parameter_constraints: dict = {
        "hidden_dim": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "expert_fusion": [StrOptions(set(EXPERT_FUSIONS))],
        "modality_fusion": [StrOptions(set(MODALITY_FUSIONS))],
        "modality_dropout": [Interval(Real, 0, 1, closed="left")],
        "expert_bottleneck": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left"), None],
        "n_members": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "linear_path": [StrOptions({"auto"}), "boolean"],
        "aux_weight": [Interval(Real, 0, None, closed="left")],
        "pattern_prior": ["boolean"],
        "calibration": [StrOptions(set(CALIBRATIONS)), None],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "teacher": [
            None,
            StrOptions({_AUTO, _ALIGN, _CONTRASTIVE}),
            HasMethods(["fit", "predict", "predict_proba"]),
            tuple,
            list,
        ],
        "unlabeled_value": [None, Real, str],
        "consistency_weight": [Interval(Real, 0, None, closed="left")],
        "align_weight": [Interval(Real, 0, None, closed="left")],
        "distill_weight": [Interval(Real, 0, None, closed="left")],
        "distill_temperature": [Interval(Real, 0, None, closed="neither")],
        "teacher_cv": [Interval(Integral, 2, None, closed="left"), HasMethods(["split", "get_n_splits"])],
        "blocks": [dict, list, tuple, None],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        hidden_dim="auto",
        expert_fusion="gate",
        modality_fusion="attention",
        modality_dropout=0.2,
        expert_bottleneck="auto",
        n_members="auto",
        linear_path="auto",
        aux_weight=0.3,
        pattern_prior=False,
        calibration="presence",
        dropout=0.1,
        lr=1e-3,
        weight_decay=1e-4,
        batch_size=128,
        max_epochs=60,
        early_stopping=True,
        validation_fraction=0.1,
        patience=8,
        class_weight=None,
        teacher=None,
        unlabeled_value=None,
        consistency_weight=1.0,
        align_weight=1.0,
        distill_weight=3.0,
        distill_temperature=2.0,
        teacher_cv=5,
        blocks=None,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.hidden_dim = hidden_dim
        self.expert_fusion = expert_fusion
        self.modality_fusion = modality_fusion
        self.modality_dropout = modality_dropout
        self.expert_bottleneck = expert_bottleneck
        self.n_members = n_members
        self.linear_path = linear_path
        self.aux_weight = aux_weight
        self.pattern_prior = pattern_prior
        self.calibration = calibration
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.class_weight = class_weight
        self.teacher = teacher
        self.unlabeled_value = unlabeled_value
        self.consistency_weight = consistency_weight
        self.align_weight = align_weight
        self.distill_weight = distill_weight
        self.distill_temperature = distill_temperature
        self.teacher_cv = teacher_cv
        self.blocks = blocks
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def get_metadata_routing(self):
        """How ``fit``'s metadata reach this classifier and its teacher estimator.

        With ``sklearn.set_config(enable_metadata_routing=True)``, the
        classifier uses ``sample_weight`` itself and routes it to the
        teacher estimator's ``fit`` as that estimator requests
        (``teacher.set_fit_request(sample_weight=True)``), as scikit-learn's
        meta-estimators do. Without routing, the teacher gets the weights
        when its ``fit`` takes ``sample_weight``.

        Returns
        -------
        routing : sklearn.utils.metadata_routing.MetadataRouter
        """
        router = MetadataRouter(owner=self.__class__.__name__).add_self_request(self)
        try:
            _, estimator = self._teacher_modes()
        except ValueError:  # a malformed teacher is reported by fit
            estimator = None
        if estimator is not None:
            router.add(teacher=estimator, method_mapping=MethodMapping().add(caller="fit", callee="fit"))
        return router

    # -- public API --------------------------------------------------------
    # Not skipping nested validation: the teacher estimator is fitted inside.
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_weight=None):
        """Fit the fusion network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Block matrix; NaN marks absent blocks (and missing tabular cells).
        y : array-like of shape (n_samples,)
            Class labels (strings or integers); with ``unlabeled_value`` set,
            the rows equal to it are unlabelled.
        sample_weight : array-like of shape (n_samples,), default=None
            Per-row weights.

        Returns
        -------
        self : MedMIXClassifier
        """
        alignment, teacher_estimator = self._teacher_modes()
        teacher_params = None
        if teacher_estimator is not None and get_config().get("enable_metadata_routing"):
            # As scikit-learn's meta-estimators do: the teacher gets what it requested.
            metadata = {} if sample_weight is None else {"sample_weight": sample_weight}
            teacher_params = dict(process_routing(self, "fit", **metadata).teacher.fit)
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=[np.float64, np.float32])
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        calibration = getattr(self, "calibration", None)
        labeled = self._labeled_rows(y)
        self.n_unlabeled_ = int((~labeled).sum())
        if self.n_unlabeled_:
            self._check_unlabeled(labeled, bool(alignment) or teacher_estimator is not None)
        check_classification_targets(y[labeled])
        self._encoder = LabelEncoder().fit(y[labeled])
        self.classes_ = self._encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"MedMIXClassifier needs samples of at least 2 classes; got 1 class "
                f"({self.classes_[0]!r}). Check y."
            )
        # Unlabelled rows get a placeholder class; no supervised term reads it.
        y_enc = np.zeros(len(y), dtype=np.intp)
        y_enc[labeled] = self._encoder.transform(y[labeled])
        self._fit_preprocessing(X, y_enc, labeled)
        self._fit_pattern_prior(X[labeled], y_enc[labeled])
        self.seed_ = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        self.class_weight_ = self._class_weights(y_enc[labeled])
        self._resolve_size(self._n_members(y_enc[labeled]))
        dataset = self._dataset(X, y_enc, sample_weight, labeled=labeled)
        aligner = None
        if alignment or teacher_estimator is not None:
            aligner = self._attach_teacher(
                dataset, X, y_enc, sample_weight, bool(alignment), teacher_estimator, labeled,
                teacher_params,
            )
            if self.n_unlabeled_ and not dataset.teacher.keys() - {"labeled"}:
                raise ValueError(
                    f"{self.n_unlabeled_} rows of y are unlabelled (unlabeled_value="
                    f"{self.unlabeled_value!r}) but every teacher block is NaN in every row, so "
                    "nothing would train them. Fit on the embedder's fit_transform output, or "
                    "drop the unlabelled rows."
                )

        # Member 0 uses seed_ itself, so one member trains exactly as before ensembles existed.
        more = np.random.RandomState(self.seed_).randint(np.iinfo(np.int32).max, size=self.n_members_ - 1)
        seeds = [self.seed_, *more]
        self.calibration_prior_ = None
        if calibration is not None:
            weight = dataset.sample_weight.numpy().astype(np.float64)[labeled]
            shares = np.bincount(y_enc[labeled], weights=weight, minlength=len(self.classes_))
            # A class without weight would give log 0: its share is floored.
            shares = np.maximum(shares / shares.sum(), 1e-6)
            self.calibration_prior_ = shares / shares.sum()
        held_out: list = []
        members = [
            self._fit_member(dataset, y_enc, labeled, int(seed), aligner, alignment, held_out)
            for seed in seeds
        ]
        self.temperatures_ = self._fit_temperatures(held_out) if calibration is not None and held_out else None
        if self.temperatures_ is None:
            self.calibration_prior_ = None
        if self.n_members_ == 1:
            self.net_ = members[0]
        else:
            self.net_ = self._build_net(None, n_members=self.n_members_).initialize()
            for module, net in zip(self.net_.module_.members, members):
                module.load_state_dict(net.module_.state_dict())
            _merge_optimizer_states(self.net_, members)
            # The ensemble's training record is its first member's.
            self.net_.history = members[0].history
        self.n_iter_ = len(self.net_.history)
        return self

    def _fit_member(self, dataset, y_enc, labeled, seed, aligner, alignment, held_out=None) -> FusionNet:
        """Train one network (its own initialisation, shuffling and early-stopping split).

        With ``calibration`` set, the network's logits on its held-out rows
        (see :meth:`_held_out_logits`) are appended to the list ``held_out``.
        """
        valid = None
        train_idx = np.arange(len(y_enc))
        if self.early_stopping:
            soft = dataset.teacher.get("soft_mask")
            scored = None if soft is None else soft.numpy() & ~labeled
            train_idx, valid_idx = self._validation_split(y_enc, labeled, seed, scored)
            if valid_idx is not None:
                valid = dataset.subset(valid_idx)
        net = self._build_net(valid, aligner=aligner, alignment=alignment, random_state=seed)
        net.fit(dataset.subset(train_idx) if valid is not None else dataset, None)
        dict(net.callbacks_)["epoch_log"].close()
        # Training-only: the heads and their optimizer go, so prediction and
        # the pickle are those of a model trained without a teacher. The
        # held-out rows and early stopping go too: the fitted net holds no
        # training rows, and a later partial_fit trains the same way on a
        # live model and on an unpickled one.
        net.drop_teacher()
        if getattr(self, "calibration", None) is not None and held_out is not None and valid is not None:
            held_out.append(self._held_out_logits(net.module_, valid, valid_idx, seed))
        if valid is not None:
            net.train_split = None
            net.callbacks = [cb for cb in net.callbacks if cb[0] != "early_stopping"]
            net.initialize_callbacks()
        return net

    def _held_out_logits(self, module, valid: BlockDataset, rows: np.ndarray, seed: int) -> dict:
        """One trained network's logits on its labelled held-out rows, for the temperatures.

        ``rows`` are the training-set indices of ``valid``'s rows. With
        ``calibration="presence"`` the rows are copied with modalities blanked
        at random (seeded with the member's ``seed``, so a fit is
        reproducible), the rows as observed weighted to carry half the
        weight (:func:`copy_weights`). Returns the logits, labels, weights,
        modalities present and training-set row of every copy.
        """
        n_mod = len(self.modality_names_)
        labeled = valid.teacher.get("labeled")
        keep_rows = np.arange(len(valid)) if labeled is None else np.flatnonzero(labeled.numpy())
        x, mask = valid.x[keep_rows], valid.mask[keep_rows].numpy()
        y, weight = valid.y[keep_rows].numpy(), valid.sample_weight[keep_rows].numpy().astype(np.float64)
        block_mod = np.asarray(self.network_params_["block_modality"])
        present = np.stack([mask[:, block_mod == j].any(axis=1) for j in range(n_mod)], axis=1)
        if self.calibration == "temperature":
            copies, keep = np.arange(len(keep_rows)), present
            share = np.ones(len(copies))
        else:
            rng = np.random.default_rng(seed)
            n_copies = n_copies_for(len(keep_rows))
            copies, keep = blanked_copies(present, rng, n_copies)
            share = copy_weights(len(keep_rows), n_copies)
        copy_mask = mask[copies] & keep[:, block_mod]
        # Zero the blanked blocks too, as _prepare writes an absent block.
        columns_absent = ~copy_mask[:, np.repeat(np.arange(len(block_mod)), self.network_params_["block_dims"])]
        copy_x = x[copies].masked_fill(torch.as_tensor(columns_absent), 0.0)
        out = self._run_module(module, copy_x, torch.as_tensor(copy_mask), temperatures=None)
        return {
            "logits": out[0].double().cpu().numpy(),
            "y": y[copies],
            "weight": weight[copies] * share,
            "n_present": out[4].sum(dim=1).round().long().cpu().numpy(),
            "rows": np.asarray(rows)[keep_rows][copies],
        }

    def _fit_temperatures(self, held_out: list) -> np.ndarray:
        """The shared temperatures from every member's held-out logits (``calibration``)."""
        n_mod = len(self.modality_names_)
        pooled = {key: np.concatenate([part[key] for part in held_out]) for key in held_out[0]}
        log_prior = np.log(self.calibration_prior_)
        n_present = pooled["n_present"]
        if self.calibration == "temperature":
            n_present = np.where(n_present > 0, 1, 0)  # one temperature for every count
        temperatures = fit_temperatures(
            pooled["logits"], pooled["y"], pooled["weight"], n_present, pooled["rows"],
            n_mod if self.calibration == "presence" else 1, log_prior,
        )
        if self.calibration == "temperature":
            temperatures = np.r_[1.0, np.full(n_mod, temperatures[1])]
        return temperatures

    def _run_module(self, module, x: torch.Tensor, mask: torch.Tensor, temperatures="fitted",
                    step: int | None = None) -> tuple:
        """The output tuple of the network ``module`` (evaluation mode) on ``x``, in batches.

        ``temperatures``: the fitted ``temperatures_`` (default; the logits are
        tempered, an ensemble's member by member before averaging), or None for the
        network as trained. ``x`` is cast to the module's dtype and device; the
        fields come back on the CPU. ``step``: rows per forward pass (default
        ``max(batch_size, 1024)``).
        """
        if isinstance(temperatures, str):
            temperatures = getattr(self, "temperatures_", None)
        if temperatures is not None:
            log_prior = torch.as_tensor(np.log(self.calibration_prior_))
        parameter = next(module.parameters())
        was_training = module.training
        module.eval()
        ensemble = isinstance(module, FusionEnsemble)
        members = list(module.members) if ensemble else [module]
        step = max(int(self.batch_size), 1024) if step is None else int(step)
        parts = []
        try:
            with torch.inference_mode():
                for i in range(0, len(x), step):
                    xb = x[i : i + step].to(device=parameter.device, dtype=parameter.dtype)
                    mb = mask[i : i + step].to(parameter.device)
                    if temperatures is None:
                        out = module(xb, mb)
                    else:
                        t = torch.as_tensor(temperatures)
                        tempered = [temper(member(xb, mb), t, log_prior) for member in members]
                        out = FusionEnsemble.combine(tempered) if ensemble else tempered[0]
                    parts.append(tuple(field.cpu() for field in out[:5]))
        finally:
            module.train(was_training)
        return FusionOutput(*(torch.cat(field) for field in zip(*parts)))

    def _resolve_size(self, n_members: int) -> None:
        """Set ``n_members_``, and the ``"auto"`` values that follow it (small data or not)."""
        self.n_members_ = n_members
        small = n_members > 1
        linear_path = getattr(self, "linear_path", False)
        self.linear_path_ = small if linear_path == "auto" else bool(linear_path)
        hidden_dim = self.hidden_dim
        if hidden_dim == "auto":
            hidden_dim = _SMALL_DATA_HIDDEN_DIM if small else _HIDDEN_DIM
        self.hidden_dim_ = int(hidden_dim)

    def _n_members(self, y_labeled: np.ndarray) -> int:
        """Members of the ensemble for these (encoded, labelled) training labels."""
        # Subclasses without the parameter (the published fusion baselines of
        # benchmarks/) train one network, as before it existed.
        n_members = getattr(self, "n_members", 1)
        if n_members != "auto":
            return int(n_members)
        counts = np.bincount(y_labeled)
        rarest = int(counts[counts > 0].min())
        return _ENSEMBLE_MEMBERS if rarest < _ENSEMBLE_BELOW_RAREST else 1

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train one epoch on ``(X, y)``, continuing from the previous call.

        The first call fixes the layout, the feature standardisation and the
        classes (and ``class_weight="balanced"`` weights, from its ``y``); no
        validation split is held out.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), default=None
            All classes; needed on the first call if ``y`` may lack some.
            Taken from ``y`` when None on the first call.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : MedMIXClassifier
        """
        # Not sklearn.utils.multiclass._check_partial_fit_first_call: it requires
        # classes= on the first call, where this method documents taking them from y.
        first = not hasattr(self, "net_")
        if first:
            self._validate_params()
        if self.teacher is not None:
            raise ValueError(
                f"partial_fit does not use teachers (their soft labels are cross-fitted on the "
                f"whole training set); got teacher={self.teacher!r}. Use fit, or set teacher=None."
            )
        X, y = validate_data(
            self, X, y, ensure_all_finite="allow-nan", dtype=[np.float64, np.float32], reset=first
        )
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        labeled = self._labeled_rows(y)
        if not labeled.all():
            raise ValueError(
                f"partial_fit got {int((~labeled).sum())} unlabelled rows (y equal to "
                f"unlabeled_value={self.unlabeled_value!r}), but it has no teacher to train them "
                "with (teachers are cross-fitted on a whole training set). Drop those rows, or "
                "use fit with a teacher."
            )
        check_classification_targets(y)
        if classes is not None and self.unlabeled_value is not None:
            classes = np.asarray(classes)
            classes = classes[self._labeled_rows(classes)]  # classes_ never holds it
        if first:
            self._encoder = LabelEncoder().fit(np.unique(y) if classes is None else np.asarray(classes))
            self.classes_ = self._encoder.classes_
            if len(self.classes_) < 2:
                raise ValueError(
                    f"MedMIXClassifier needs at least 2 classes; got {list(self.classes_)!r}. "
                    "Pass all classes with `classes=` on the first call to partial_fit."
                )
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes={np.unique(classes).tolist()!r} differs from the classes of the first "
                f"call to partial_fit, {self.classes_.tolist()!r}. Call fit to start over."
            )
        unseen = np.setdiff1d(np.unique(y), self.classes_)
        if unseen.size:
            raise ValueError(
                f"y contains labels {unseen.tolist()!r} that are not in classes_ "
                f"{self.classes_.tolist()!r}. Pass every class with `classes=` on the first call."
            )
        y_enc = self._encoder.transform(y)
        calibration = getattr(self, "calibration", None)
        # From scratch it holds out no rows, so it fits no temperatures (documented).
        if not first and getattr(self, "temperatures_", None) is not None:
            warnings.warn(
                "partial_fit changes the weights the temperatures of calibration="
                f"{calibration!r} were fitted to, so it drops them (temperatures_ is now None). "
                "Call fit to train and calibrate again.",
                CalibrationWarning,
                stacklevel=2,
            )
            self.temperatures_ = self.calibration_prior_ = None
        if first:
            self._fit_preprocessing(X, y_enc)
            self._fit_pattern_prior(X, y_enc)
            self.seed_ = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            self.class_weight_ = self._class_weights(y_enc)
            self._resolve_size(1)
            self.net_ = self._build_net(None)
            self.net_.initialize()
            self.n_iter_ = 0
            self.n_unlabeled_ = 0
            self.temperatures_ = self.calibration_prior_ = None
        dataset = self._dataset(X, y_enc, sample_weight)
        self.net_.partial_fit(dataset, None, epochs=1)
        self.n_iter_ += 1
        return self

    def decision_function(self, X):
        """Logits: log-odds of ``classes_[1]`` (binary) or per-class logits.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        logits = self._forward(X).logits.double().numpy()
        if len(self.classes_) == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return torch.softmax(self._forward(X).logits.double(), dim=1).numpy()

    def predict(self, X):
        """Predicted class labels.

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def explain(self, X):
        """Per-sample expert and modality weights.

        Expert weights of a modality are non-negative and sum to 1 over that
        modality's experts present in the row (0 if the modality is absent);
        modality weights sum to 1 over the modalities present. Absent entries
        are exactly 0. A row with nothing present has all weights 0.

        How to read them: an expert weight is the share of that expert's token
        in its modality's token. A modality weight (with "attention") scales
        that modality's slot before a layer shared by all rows, so it says how
        much more or less the modality counts for this row than for others,
        not an absolute share of the prediction. With "concat" the weights are
        uniform over what is present: that fusion learns no per-row weighting.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        weights : pandas.DataFrame of shape (n_samples, n_blocks + n_modalities)
            Columns ``expert_weight__{modality}__{expert}`` then
            ``modality_weight__{modality}``; the index of ``X`` when it is a
            DataFrame.
        """
        out = self._forward(X)
        columns = [f"expert_weight{SEP}{b.modality}{SEP}{b.expert}" for b in self.blocks_]
        columns += [f"modality_weight{SEP}{m}" for m in self.modality_names_]
        values = torch.cat([out.expert_weights, out.modality_weights], dim=1).double().numpy()
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(values, columns=columns, index=index)

    # -- persistence -------------------------------------------------------
    def __getstate__(self):
        state = dict(super().__getstate__())  # object.__getstate__ may return __dict__ itself
        names = state.pop("feature_names_in_", None)
        if names is not None:
            # Embedding columns are numbered runs ("report__minilm__0" .. "__383"): stored as
            # runs of plain strings and ints, wide (teacher) blocks cost a few bytes in a
            # pickle or model file instead of ~40 per column.
            state["_feature_name_runs"] = _name_runs(names)
        return state

    def __setstate__(self, state):
        state = dict(state)
        # A model saved before calibration existed was not calibrated.
        if "classes_" in state and "calibration" not in state:
            state["calibration"] = None
        runs = state.pop("_feature_name_runs", None)
        if runs is not None:
            state["feature_names_in_"] = _names_from_runs(runs)
        super().__setstate__(state)

    # -- internals ---------------------------------------------------------
    def _resolve_layout(self, n_features: int) -> tuple[list[Block], list[Block]]:
        """Student blocks (the inputs) and teacher blocks (training-only targets)."""
        names = getattr(self, "feature_names_in_", None)
        if isinstance(self.blocks, dict):
            layout = blocks_from_mapping(self.blocks, n_features)
        elif self.blocks is not None:
            layout = check_blocks(self.blocks, n_features)
        elif names is not None and any(SEP in str(n) for n in names):
            layout = parse_feature_names(strip_transformer_prefixes(names))
        else:
            if n_features >= _LAYOUT_WARN_WIDTH:
                given = "an array without column names" if names is None else "columns without layout names"
                warnings.warn(
                    f"MedMIXClassifier got {given} ({n_features} columns), so it treats "
                    f"them all as one tabular modality {_DEFAULT_MODALITY!r}. If X comes from "
                    "MultimodalExpertEmbedder, its block layout was lost on the way (a "
                    "meta-estimator such as BaggingClassifier passes arrays; "
                    "set_output(transform='default') drops column names). Keep the layout "
                    "with set_output(transform='pandas') on the embedder, or pass "
                    "blocks=embedder.blocks_ + embedder.teacher_blocks_ (or a {modality: "
                    "columns} dict); pass "
                    f"blocks={{{_DEFAULT_MODALITY!r}: range({n_features})}} to silence this warning.",
                    LayoutWarning,
                    stacklevel=4,
                )
            layout = [Block(_DEFAULT_MODALITY, TABULAR_EXPERT, tuple(range(n_features)))]
        # Teacher blocks are training-only targets, never inputs.
        students = [b for b in layout if not b.teacher]
        if not students:
            raise ValueError(
                "Every block of X is a teacher (training-only) block, so there is no input "
                "to predict from. Add student modalities."
            )
        return students, [b for b in layout if b.teacher]

    def _fit_preprocessing(self, X: np.ndarray, y_enc: np.ndarray, labeled: np.ndarray | None = None) -> None:
        """Learn the layout, per-feature standardisation and missing indicators."""
        self.blocks_, teachers = self._resolve_layout(X.shape[1])
        self.teacher_blocks_ = teachers if self.teacher is not None else []
        self.modality_names_ = list(dict.fromkeys(b.modality for b in self.blocks_))
        self._columns = np.concatenate([np.asarray(b.columns, dtype=np.intp) for b in self.blocks_])
        self._mean, self._scale = _nan_standardisation(X[:, self._columns])

        presence = self._presence(X)
        absent_everywhere = [
            m for m in self.modality_names_
            if not presence[:, [i for i, b in enumerate(self.blocks_) if b.modality == m]].any()
        ]
        if absent_everywhere:
            warnings.warn(
                f"Modalities {absent_everywhere!r} are absent (all NaN) in every training row; "
                "they cannot be learned and will be ignored in practice.",
                MissingModalityWarning,
                stacklevel=4,
            )
        # Missing-indicator inputs for tabular columns with NaN cells in present rows.
        self._indicators = []
        for i, b in enumerate(self.blocks_):
            if b.expert != TABULAR_EXPERT:
                self._indicators.append(np.empty(0, dtype=np.intp))
                continue
            cells = np.isnan(X[np.ix_(presence[:, i], list(b.columns))])
            self._indicators.append(np.flatnonzero(cells.any(axis=0)))
        self._projections = self._fit_bottlenecks(X, y_enc, presence, labeled)
        self.network_params_ = {
            "block_dims": [
                (b.dim if proj is None else proj.shape[1]) + len(ind)
                for b, ind, proj in zip(self.blocks_, self._indicators, self._projections)
            ],
            "block_modality": [self.modality_names_.index(b.modality) for b in self.blocks_],
            "block_norm": [b.expert != TABULAR_EXPERT for b in self.blocks_],
        }
        self.device_ = (
            ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        )
        try:
            torch.device(self.device_)
        except RuntimeError as exc:
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {self.device!r}."
            ) from exc

    def _fit_pattern_prior(self, X: np.ndarray, y_enc: np.ndarray, smoothing: float = 10.0) -> None:
        """Starting pattern biases: smoothed ``log p(class | pattern) - log p(class)``.

        A pattern seen ``n`` times gets ``(n_c + s * p_c) / (n + s)`` with
        ``s = smoothing``, so rare or unseen patterns start near no bias.
        """
        if not self.pattern_prior:
            return
        n_mod = len(self.modality_names_)
        if n_mod > MedMIXNetwork.max_pattern_modalities:
            return  # the network raises with the explanation
        block_mod = np.asarray(self.network_params_["block_modality"])
        present = self._presence(X)
        mod_present = np.stack([present[:, block_mod == j].any(axis=1) for j in range(n_mod)], axis=1)
        code = mod_present.astype(np.int64) @ (2 ** np.arange(n_mod))
        n_classes = len(self.classes_)
        prior = (np.bincount(y_enc, minlength=n_classes) + 1.0) / (len(y_enc) + n_classes)
        counts = np.zeros((2**n_mod, n_classes))
        np.add.at(counts, (code, y_enc), 1.0)
        smoothed = (counts + smoothing * prior) / (counts.sum(axis=1, keepdims=True) + smoothing)
        self.network_params_["pattern_init"] = (np.log(smoothed) - np.log(prior)).tolist()

    def _bottleneck_width(self, y_present: np.ndarray, dim: int) -> int:
        """Inputs kept by an expert block of ``dim`` columns, from the labels of its present rows."""
        # Subclasses without the parameter (the published fusion baselines of
        # benchmarks/) keep their blocks whole, as before it existed.
        bottleneck = getattr(self, "expert_bottleneck", None)
        if bottleneck is None:
            return dim
        if bottleneck == "auto":
            counts = np.bincount(y_present)
            rarest = int(counts[counts > 0].min()) if counts.any() else 0
            if dim <= _BOTTLENECK_DIMS_PER_EVENT * rarest:
                return dim
            return min(dim, max(1, rarest // _BOTTLENECK_EVENTS_PER_COMPONENT))
        return min(dim, int(bottleneck))

    def _fit_bottlenecks(
        self, X: np.ndarray, y_enc: np.ndarray, presence: np.ndarray, labeled: np.ndarray | None = None
    ) -> list:
        """Per block: None, or the (dim, k) map onto its k leading principal components.

        Computed on the standardised rows where the block is present (unlabelled
        ones included); each component is divided by its standard deviation, so
        the reduced inputs have unit variance like the standardised columns they
        replace. The width counts the labelled rows only.
        """
        projections: list = []
        start = 0
        for i, b in enumerate(self.blocks_):
            cols = slice(start, start + b.dim)
            start += b.dim
            rows = presence[:, i]
            counted = rows if labeled is None else rows & labeled
            k = self._bottleneck_width(y_enc[counted], b.dim)
            if b.expert == TABULAR_EXPERT or k >= b.dim or not rows.any():
                projections.append(None)
                continue
            z = (X[np.ix_(rows, self._columns[cols])] - self._mean[cols]) / self._scale[cols]
            z = np.where(np.isnan(z), 0.0, z)
            z -= z.mean(axis=0)
            _, singular, vt = np.linalg.svd(z, full_matrices=False)
            std = singular[:k] / np.sqrt(max(len(z) - 1, 1))
            projections.append(vt[:k].T / np.where(std > 1e-12, std, 1.0))
        return projections

    def _presence(self, X: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """(n, n_blocks) bool: a block is present when any of its cells is not NaN.

        ``where`` maps input column indices to columns of ``X`` when ``X``
        holds only some of the input columns (see ``_validate_predict_input``).
        """
        take = (lambda cols: where[list(cols)]) if where is not None else list
        return block_presence(X, [take(b.columns) for b in self.blocks_])

    def _prepare(self, X: np.ndarray, where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Standardised, NaN-free float32 matrix in block order, and the block mask."""
        mask = self._presence(X, where)
        columns = self._columns if where is None else where[self._columns]
        z = (X[:, columns] - self._mean) / self._scale
        nan = np.isnan(z)
        z[nan] = 0.0
        pieces, start = [], 0
        projections = getattr(self, "_projections", None) or [None] * len(self.blocks_)
        for b, ind, proj in zip(self.blocks_, self._indicators, projections):
            block = z[:, start : start + b.dim]
            # Absent rows are all zeros, and stay zeros through the projection.
            pieces.append(block if proj is None else block @ proj)
            if len(ind):
                pieces.append(nan[:, start + ind])
            start += b.dim
        x = np.concatenate(pieces, axis=1) if len(pieces) > 1 else pieces[0]
        return np.ascontiguousarray(x, dtype=np.float32), mask

    def _dataset(self, X, y=None, sample_weight=None, where=None, labeled=None) -> BlockDataset:
        """Network inputs; ``labeled`` (bool per row) marks a semi-supervised fit's labelled rows."""
        x, mask = self._prepare(X, where)
        if sample_weight is not None and self.class_weight_ is not None:
            factor = self.class_weight_[y]
            if labeled is not None:
                factor = np.where(labeled, factor, 1.0)  # an unlabelled row has no class
            sample_weight = sample_weight * factor
        teacher = None
        if labeled is not None and not labeled.all():
            teacher = {"labeled": labeled}
        return BlockDataset(x, mask, y, sample_weight, teacher)

    # -- semi-supervised -------------------------------------------------------
    def _labeled_rows(self, y) -> np.ndarray:
        """Bool per entry of ``y``: False where it equals ``unlabeled_value``."""
        y = np.asarray(y)
        if self.unlabeled_value is None:
            return np.ones(len(y), dtype=bool)
        # An object comparison works across types (a string label vs -1 is simply unequal).
        return ~np.asarray(y.astype(object) == self.unlabeled_value, dtype=bool)

    def _check_unlabeled(self, labeled: np.ndarray, has_teacher: bool) -> None:
        n_unlabeled = int((~labeled).sum())
        if not has_teacher:
            raise ValueError(
                f"{n_unlabeled} rows of y equal unlabeled_value={self.unlabeled_value!r}, but "
                "teacher=None: without a teacher nothing trains unlabelled rows. Set teacher='auto' "
                "(X needs teacher blocks, from MultimodalExpertEmbedder(teachers=...)), or drop "
                "those rows."
            )
        if not labeled.any():
            raise ValueError(
                f"Every row of y equals unlabeled_value={self.unlabeled_value!r}: at least some "
                "rows of every class must be labelled. Check y and unlabeled_value."
            )

    # -- teachers ------------------------------------------------------------
    def _teacher_modes(self) -> tuple[tuple[str, ...], object]:
        """``(alignment terms, estimator)`` from the ``teacher`` parameter; raise if malformed.

        The alignment terms are a tuple of "cosine" (``"align"``) and
        "contrastive"; the estimator is None or the unfitted teacher classifier.
        """
        teacher = self.teacher
        names = {_ALIGN: "cosine", _CONTRASTIVE: "contrastive"}
        if teacher is None:
            return (), None
        if isinstance(teacher, str):
            if teacher == _AUTO:
                return (), _default_teacher()
            return (names[teacher],), None  # checked by the parameter constraints
        if not isinstance(teacher, (tuple, list)):
            return (), self._check_teacher_estimator(teacher)
        strings = [t for t in teacher if isinstance(t, str)]
        others = [t for t in teacher if not isinstance(t, str)]
        if (
            len(teacher) >= 2
            and len(others) <= 1
            and len(set(strings)) == len(strings)
            and set(strings) <= set(names)
        ):
            estimator = self._check_teacher_estimator(others[0]) if others else None
            return tuple(names[t] for t in names if t in strings), estimator
        raise ValueError(
            "teacher must be None, 'align', 'contrastive', 'auto', an unfitted classifier, or a "
            "tuple of at least two of them with each string at most once and at most one "
            f"classifier, such as ('align', classifier). Got {teacher!r} instead."
        )

    def _privileged_teacher(self) -> bool:
        """Whether the cross-fitted teacher reads the teacher columns only (``teacher="auto"``)."""
        return isinstance(self.teacher, str) and self.teacher == _AUTO

    @staticmethod
    def _check_teacher_estimator(estimator):
        methods = ("fit", "predict", "predict_proba")
        if isinstance(estimator, type) or not all(hasattr(estimator, m) for m in methods):
            raise ValueError(
                "A teacher estimator must be an unfitted scikit-learn classifier instance "
                f"with fit, predict and predict_proba. Got {estimator!r} instead."
            )
        if not is_classifier(estimator):
            raise ValueError(
                f"The teacher estimator must be a classifier (its soft labels are distilled); "
                f"got {estimator!r}, whose estimator type is not 'classifier'."
            )
        return estimator

    def _attach_teacher(
        self,
        dataset: BlockDataset,
        X: np.ndarray,
        y_enc: np.ndarray,
        sample_weight: np.ndarray,
        align: bool,
        estimator,
        labeled: np.ndarray,
        teacher_params: dict | None = None,
    ) -> dict | None:
        """Add the teacher tensors to ``dataset``; return the alignment heads' spec."""
        teachers = self.teacher_blocks_
        if not teachers:
            raise ValueError(
                f"teacher={self.teacher!r} needs teacher blocks in X (columns named "
                "'teacher__{modality}__{expert}__{k}' or 'teacher__{modality}__{feature}', or "
                "'teacher__' keys in blocks=), but X has none. Pass teachers= to "
                "MultimodalExpertEmbedder, or set teacher=None."
            )
        present = block_presence(X, [b.columns for b in teachers])
        if not present.any():
            warnings.warn(
                f"teacher={self.teacher!r} is set but every teacher block is NaN in every "
                "training row (as transform writes them), so training gets no teacher term. "
                "Fit on the output of the embedder's fit_transform (a Pipeline does this).",
                MissingModalityWarning,
                stacklevel=4,
            )
            return None
        aligner = None
        if align:
            targets = []
            for b, rows in zip(teachers, present.T):
                values = X[:, list(b.columns)]
                mean, std = _nan_standardisation(values[rows])
                z = (values - mean) / std
                targets.append(np.where(np.isnan(z), 0.0, z))
            dataset.teacher["teacher_x"] = torch.as_tensor(np.hstack(targets), dtype=torch.float32)
            dataset.teacher["teacher_mask"] = torch.as_tensor(present)
            aligner = {
                "hidden_dim": self.hidden_dim_,
                "target_dims": [b.dim for b in teachers],
                "sources": [
                    self.modality_names_.index(b.modality) if b.modality in self.modality_names_ else -1
                    for b in teachers
                ],
            }
        if estimator is not None:
            soft = self._cross_fit_teacher(estimator, X, y_enc, sample_weight, labeled, teacher_params)
            dataset.teacher["soft_target"] = torch.as_tensor(soft, dtype=torch.float32)
            dataset.teacher["soft_mask"] = torch.as_tensor(present.any(axis=1))
        return aligner

    def _cross_fit_teacher(
        self,
        estimator,
        X: np.ndarray,
        y_enc: np.ndarray,
        sample_weight,
        labeled: np.ndarray,
        routed: dict | None = None,
    ) -> np.ndarray:
        """Class probabilities of the teacher, never in-sample.

        The teacher reads the student and teacher columns; ``teacher="auto"``'s
        default teacher reads the teacher columns only (see
        :func:`_default_teacher`). Labelled rows get their out-of-fold probabilities (each fold model is
        fitted on the other labelled rows); unlabelled rows, which no fold
        model was fitted on, get the mean of the fold models' probabilities.
        ``routed``: the fit parameters metadata routing sends to the teacher
        (per-row ones are split with the rows), or None without routing.
        """
        students = [] if self._privileged_teacher() else [self._columns]
        columns = np.concatenate(
            students + [np.asarray(b.columns, dtype=np.intp) for b in self.teacher_blocks_]
        )
        X_teacher = X[:, columns]
        rows = np.flatnonzero(labeled)
        unlabeled = np.flatnonzero(~labeled)
        X_lab, y_lab, w_lab = X_teacher[rows], y_enc[rows], sample_weight[rows]
        cv = self.teacher_cv
        if isinstance(cv, Integral):
            smallest = int(np.bincount(y_lab).min())
            if smallest < 2:
                raise ValueError(
                    "Cross-fitting the teacher needs at least 2 labelled rows of every class; the "
                    f"smallest class has {smallest}. Use teacher='align' or more data."
                )
            cv = StratifiedKFold(n_splits=min(int(cv), smallest), shuffle=True, random_state=self.seed_)
        weighted = not np.all(sample_weight == 1.0) and has_fit_parameter(estimator, "sample_weight")
        n_classes = len(self.classes_)
        proba = np.zeros((len(y_enc), n_classes))
        seen = np.zeros(len(rows), dtype=int)
        n_folds = 0
        with warnings.catch_warnings():
            # Folds without some class are fine: their columns come back as 0.
            warnings.filterwarnings("ignore", message=".*least populated class.*")
            folds = list(cv.split(X_lab, y_lab))
        for train, test in folds:
            model = clone(estimator)
            if routed is not None:  # metadata routing is on: what the teacher requested
                params = {k: _rows_of(v, rows[train], len(y_enc)) for k, v in routed.items()}
            else:
                params = {"sample_weight": w_lab[train]} if weighted else {}
            try:
                model.fit(X_lab[train], y_lab[train], **params)
            except ValueError as exc:
                if "nan" in str(exc).lower():
                    raise ValueError(
                        f"The teacher estimator {estimator!r} does not accept NaN, which marks "
                        "absent modalities in X. Use an estimator that handles NaN (such as "
                        "HistGradientBoostingClassifier) or a Pipeline that starts with "
                        f"SimpleImputer. The error was: {exc}"
                    ) from exc
                raise
            # A fold may lack a class: its column stays 0.
            where = np.asarray(model.classes_, dtype=np.intp)
            proba[np.ix_(rows[test], where)] = model.predict_proba(X_lab[test])
            if len(unlabeled):
                proba[np.ix_(unlabeled, where)] += model.predict_proba(X_teacher[unlabeled])
            seen[test] += 1
            n_folds += 1
        if not np.all(seen == 1):
            raise ValueError(
                f"teacher_cv={self.teacher_cv!r} must put every labelled training row in exactly "
                "one test fold (a partition, like KFold), so that each gets one out-of-fold "
                "prediction. Use an int or a KFold-like splitter."
            )
        if len(unlabeled):
            proba[unlabeled] /= n_folds
        if self._calibrate_teacher():
            slope, bias = _fit_platt(proba[rows], y_lab, w_lab)
            proba = _apply_platt(proba, slope, bias)
        return proba

    def _calibrate_teacher(self) -> bool:
        """Whether the cross-fitted probabilities are Platt-scaled before distillation.

        Off: the teacher's probabilities are distilled as they are. (A hook for
        benchmarks/bench_teachers.py, which measures the scaling.)
        """
        return False

    def _class_weights(self, y_enc: np.ndarray) -> np.ndarray | None:
        """Per-class weights in the order of ``classes_`` (None without class_weight)."""
        if self.class_weight is None:
            return None
        if self.class_weight == "balanced":
            present = np.unique(y_enc)
            weights = np.ones(len(self.classes_))
            weights[present] = compute_class_weight("balanced", classes=present, y=y_enc)
            return weights
        unknown = set(self.class_weight) - set(self.classes_.tolist())
        if unknown:
            raise ValueError(
                f"class_weight names classes {sorted(map(str, unknown))} that are not in y; "
                f"classes are {self.classes_.tolist()!r}. Fix the keys of class_weight."
            )
        return np.array([float(self.class_weight.get(c, 1.0)) for c in self.classes_])

    def _validation_split(
        self, y_enc: np.ndarray, labeled: np.ndarray, seed: int, scored: np.ndarray | None = None
    ):
        """Held-out rows for early stopping: stratified labelled rows, and some unlabelled ones.

        ``scored`` (bool per row, or None) marks the unlabelled rows that have
        the teacher's soft label: ``validation_fraction`` of them is held out
        too, and scored against that label, so that a fit with few labelled
        rows stops on many held-out rows instead of a handful. The other
        unlabelled rows are all trained on.
        """
        idx = np.flatnonzero(labeled)
        try:
            train_idx, valid_idx = train_test_split(
                idx, test_size=self.validation_fraction, stratify=y_enc[idx], random_state=seed
            )
        except ValueError as exc:
            warnings.warn(
                f"early_stopping is on but a stratified validation split of "
                f"validation_fraction={self.validation_fraction} is impossible on "
                f"{len(idx)} labelled rows ({exc}); training on all rows for max_epochs instead.",
                UserWarning,
                stacklevel=4,
            )
            return np.arange(len(y_enc)), None
        unlabeled = np.flatnonzero(~labeled)
        if scored is not None and scored.sum() >= 2:
            rows = np.flatnonzero(scored)
            _, held = train_test_split(rows, test_size=self.validation_fraction, random_state=seed)
            valid_idx = np.concatenate([valid_idx, held])
            unlabeled = np.setdiff1d(unlabeled, held)
        return np.sort(np.concatenate([train_idx, unlabeled])), np.sort(valid_idx)

    def _restore_net(self) -> FusionNet:
        """An initialised net for this fitted classifier, on a device that exists here.

        Used to read model files (:func:`~medmix_sklearn.load_model`), which
        then load the weights, optimizer state, history and generator state.
        """
        device = str(self.device_)
        if device.startswith("cuda") and not torch.cuda.is_available():
            warnings.warn(
                f"This MedMIXClassifier was trained on {device!r}, but CUDA is not available "
                "here; it runs on the CPU instead.",
                DeviceFallbackWarning,
                stacklevel=2,
            )
            device = "cpu"
        net = self._build_net(None, device=device, n_members=getattr(self, "n_members_", 1))
        return net.initialize()

    def _network_spec(self) -> tuple[type, dict, dict]:
        """The network class, its keyword arguments and :class:`FusionLoss`'s.

        The one thing a subclass changes to train another fusion network with
        this estimator's preprocessing and training loop (optimizer, early
        stopping, budget): ``benchmarks/fusion_baselines.py`` does so for the
        published methods. The network takes ``block_dims``,
        ``block_modality``, ``block_norm`` (``network_params_``) and
        ``n_classes``, and returns the :class:`FusionOutput` fields; it may
        define ``penalty()``, a regulariser that training adds to the loss.
        """
        module_params = {
            "n_classes": len(self.classes_),
            "hidden_dim": self.hidden_dim_,
            "expert_fusion": self.expert_fusion,
            "modality_fusion": self.modality_fusion,
            "dropout": self.dropout,
            "modality_dropout": self.modality_dropout,
            "pattern_prior": self.pattern_prior,
            "linear_path": getattr(self, "linear_path_", False),
            **self.network_params_,
        }
        criterion_params = {
            "aux_weight": self.aux_weight,
            "align_weight": self.align_weight,
            "distill_weight": self.distill_weight,
            "temperature": self.distill_temperature,
        }
        return MedMIXNetwork, module_params, criterion_params

    def _build_net(
        self,
        valid: BlockDataset | None,
        aligner: dict | None = None,
        device: str | None = None,
        alignment: tuple = (),
        random_state: int | None = None,
        n_members: int = 1,
    ) -> FusionNet:
        callbacks = [("epoch_log", EpochLog(verbose=self.verbose, total=self.max_epochs))]
        if valid is not None:
            callbacks.append(
                (
                    "early_stopping",
                    EarlyStopping(monitor="valid_loss", patience=self.patience, load_best=True, sink=_log_info),
                )
            )
        module, module_params, criterion_params = self._network_spec()
        if n_members > 1:
            module_params = {"member": module, "n_members": n_members, **module_params}
            module = FusionEnsemble
        return FusionNet(
            module=module,
            **{f"module__{k}": v for k, v in module_params.items()},
            aligner=aligner,
            alignment=alignment,
            criterion=FusionLoss,
            **{f"criterion__{k}": v for k, v in criterion_params.items()},
            criterion__contrastive_temperature=_CONTRASTIVE_TEMPERATURE,
            criterion__consistency_weight=self.consistency_weight,
            optimizer=torch.optim.AdamW,
            lr=self.lr,
            optimizer__weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            train_split=None if valid is None else predefined_split(valid),
            iterator_train=BatchIterator,
            iterator_train__shuffle=True,
            iterator_valid=BatchIterator,
            callbacks=callbacks,
            device=self.device_ if device is None else device,
            random_state=self.seed_ if random_state is None else random_state,
            verbose=0,
        )

    def _forward(self, X):
        check_is_fitted(self)
        X, where = self._validate_predict_input(X)
        dataset = self._dataset(X, where=where)
        calibrated = getattr(self, "temperatures_", None) is not None
        if str(self.net_.device) != "cpu":
            if calibrated:  # each network's logits are tempered before an ensemble averages them
                return self._run_module(self.net_.module_, dataset.x, dataset.mask)
            return FusionOutput(*self.net_.forward(dataset, training=False, device="cpu"))
        # On the CPU, infer in float64: float32 kernels round differently with
        # the batch's shape, so a row's output would depend on its neighbours.
        module = copy.deepcopy(self.net_.module_).double()
        return self._run_module(module, dataset.x, dataset.mask, step=self.batch_size)

    def _validate_predict_input(self, X) -> tuple[np.ndarray, np.ndarray | None]:
        """Validated float matrix, and where the input columns are in it.

        A DataFrame's teacher (or otherwise unused) columns are checked by
        name but never converted: the matrix holds only the input columns,
        and ``where`` maps input column indices to its columns (None when
        the matrix is X whole). Prediction therefore cannot depend on teacher
        columns and pays nothing for their width.
        """
        used = np.unique(self._columns)
        if not isinstance(X, pd.DataFrame) or len(used) == self.n_features_in_:
            X = validate_data(
                self, X, ensure_all_finite="allow-nan", dtype=[np.float64, np.float32], reset=False
            )
            return X, None
        _check_feature_names(self, X, reset=False)
        _check_n_features(self, X, reset=False)
        values = check_array(
            X.iloc[:, used], ensure_all_finite="allow-nan", dtype=[np.float64, np.float32],
            input_name="X",
        )
        where = np.full(self.n_features_in_, -1, dtype=np.intp)
        where[used] = np.arange(len(used))
        return values, where


def _merge_optimizer_states(ensemble: FusionNet, members: list) -> None:
    """Give the ensemble's optimizer each member's state (moments, step counts).

    The ensemble's parameters are the members' in order, so member ``i``'s
    parameter ``k`` is the ensemble's ``offset_i + k``: a later ``partial_fit``
    continues each member from where its own training stopped.
    """
    merged, offset = {}, 0
    for net in members:
        for index, state in net.optimizer_.state_dict()["state"].items():
            merged[offset + int(index)] = state
        offset += sum(1 for _ in net.module_.parameters())
    state = ensemble.optimizer_.state_dict()
    state["state"] = merged
    ensemble.optimizer_.load_state_dict(state)


def _nan_standardisation(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and scale of the non-NaN cells, as StandardScaler computes them.

    StandardScaler ignores NaN when fitting and gives a constant column scale 1;
    a column without any value (or no row at all) gets mean 0 and scale 1 here,
    where StandardScaler would give NaN, so its cells pass through unchanged.
    """
    if values.shape[0] == 0:
        return np.zeros(values.shape[1]), np.ones(values.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        scaler = StandardScaler().fit(values)
    return np.nan_to_num(scaler.mean_, nan=0.0), np.nan_to_num(scaler.scale_, nan=1.0)


def _rows_of(value, rows: np.ndarray, n_samples: int):
    """``value[rows]`` for per-row metadata (length ``n_samples``); other values as they are."""
    if hasattr(value, "__len__") and not isinstance(value, (str, dict)) and len(value) == n_samples:
        return np.asarray(value)[rows]
    return value


def _name_runs(names) -> list:
    """Column names as a list of plain strings and ``(prefix, start, stop)`` runs.

    A run stands for ``prefix + str(k)`` for ``k`` in ``range(start, stop)``;
    only builtins are used, so the file needs no class of this module to load
    them.
    """
    out: list = []
    for name in names:
        name = str(name)
        stem = name.rstrip("0123456789")
        digits = name[len(stem):]
        if digits and str(int(digits)) == digits:
            k = int(digits)
            last = out[-1] if out else None
            if isinstance(last, tuple) and last[0] == stem and last[2] == k:
                out[-1] = (stem, last[1], k + 1)
                continue
            out.append((stem, k, k + 1))
        else:
            out.append(name)
    return out


def _names_from_runs(runs: list) -> np.ndarray:
    """Inverse of :func:`_name_runs`: the object array scikit-learn keeps."""
    names: list[str] = []
    for item in runs:
        if isinstance(item, tuple):
            stem, start, stop = item
            names.extend(f"{stem}{k}" for k in range(start, stop))
        else:
            names.append(item)
    return np.asarray(names, dtype=object)


def _fit_platt(proba: np.ndarray, y_enc: np.ndarray, weight: np.ndarray) -> tuple[float, np.ndarray]:
    """Slope ``a >= 0`` and class biases ``b`` (``b[0] = 0``) of ``softmax(a * log(p) + b)``.

    Fitted by weighted log loss on out-of-fold probabilities ``proba`` of
    labelled rows with encoded labels ``y_enc``: Platt scaling for two
    classes, its temperature-and-bias form for more. A teacher that ranks
    no better than chance gets ``a`` near 0 and probabilities near the class
    frequencies; an overconfident one is softened, an underconfident one
    sharpened.
    """
    from scipy.optimize import minimize

    log_p = np.log(np.clip(proba, 1e-12, 1.0))
    n_classes = proba.shape[1]
    onehot = np.eye(n_classes)[y_enc]
    w = weight / weight.sum()

    def loss(theta):
        z = theta[0] * log_p
        z[:, 1:] += theta[1:]
        z -= z.max(axis=1, keepdims=True)
        q = np.exp(z)
        q /= q.sum(axis=1, keepdims=True)
        value = -np.sum(w * np.log(np.clip(np.sum(q * onehot, axis=1), 1e-300, None)))
        residual = w[:, None] * (q - onehot)
        grad = np.concatenate([[np.sum(residual * log_p)], residual[:, 1:].sum(axis=0)])
        return value, grad

    theta0 = np.zeros(n_classes)
    theta0[0] = 1.0
    bounds = [(0.0, 100.0)] + [(None, None)] * (n_classes - 1)
    theta = minimize(loss, theta0, jac=True, method="L-BFGS-B", bounds=bounds).x
    return float(theta[0]), np.concatenate([[0.0], theta[1:]])


def _apply_platt(proba: np.ndarray, slope: float, bias: np.ndarray) -> np.ndarray:
    """``softmax(slope * log(p) + bias)`` row by row."""
    z = slope * np.log(np.clip(proba, 1e-12, 1.0)) + bias
    z -= z.max(axis=1, keepdims=True)
    q = np.exp(z)
    return q / q.sum(axis=1, keepdims=True)


def _default_teacher():
    """The teacher estimator of ``teacher="auto"``: imputed, standardised L2 logistic regression.

    It is cross-fitted on the teacher columns alone: a teacher that also reads
    the student's columns learns their weights from the few labelled rows, and
    passes that noise on to the student through its soft labels
    (docs/benchmarks/teachers.md).
    """
    return make_pipeline(
        SimpleImputer(keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(C=0.1, max_iter=1000),
    )


def _log_info(message: str) -> None:
    logging.getLogger(__name__).info(message)

