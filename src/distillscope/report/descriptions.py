"""One line per known probe for the report: what it measures, and the paper it comes from.

Paper numbers are those of the project's paper index: [000] On the Impact of Knowledge
Distillation for Model Interpretability (ICML 2023); [001] Good Teachers Explain:
Explanation-Enhanced Knowledge Distillation; [002] Revisiting Knowledge Distillation: An
Inheritance and Exploration Framework; [003] What Knowledge Gets Distilled in Knowledge
Distillation?; [004] Trustworthy Distillation? High-Temperature Distillation as Double
Regularization Plus Gradient Masking. A probe without an entry is rendered with a generic line.
"""

from __future__ import annotations

PAPERS = {
    "000": "On the Impact of Knowledge Distillation for Model Interpretability (ICML 2023)",
    "001": "Good Teachers Explain: Explanation-Enhanced Knowledge Distillation",
    "002": "Revisiting Knowledge Distillation: An Inheritance and Exploration Framework",
    "003": "What Knowledge Gets Distilled in Knowledge Distillation?",
    "004": "Trustworthy Distillation? High-Temperature Distillation as Double Regularization "
    "Plus Gradient Masking",
}

PROBE_DESCRIPTIONS = {
    "accuracy": (
        "Top-1 and top-k accuracy on the held-out split: how well each model does the task.",
        None,
    ),
    "agreement": (
        "Share of held-out images on which the model's top-1 class matches its teacher's "
        "(higher = more faithful), and KL(teacher || model) of their outputs in nats "
        "(lower = closer).",
        "001",
    ),
    "class_similarity": (
        "Mean softmax entropy over all classes (entire) and within the true class's category "
        "(category), on the samples that every model of the mask classifies correctly (by "
        "default the compared students, as in the paper, not the teacher; see params "
        "mask_names): a higher category entropy means more class-similarity information.",
        "000",
    ),
    "adherence": (
        "Cosine similarity between the teacher's and the model's attributions of the true "
        "class: saliency (absolute input gradient), Integrated Gradients (zero baseline; signed, "
        "so in [-1, 1]), GradCAM (per image) and guided_gradcam (captum-style Guided Grad-CAM: "
        "guided backpropagation times a nearest-upsampled ReLU GradCAM of the last conv block, "
        "paper 004's GradCAM column) and bcos (a B-cos model's dynamic weights W(x), signed: the "
        "explanation e2KD distils between B-cos models, paper 001).",
        "004",
    ),
    "localisation": (
        "How much of each model's explanation of the true class falls on the object (its mask): "
        "EPG = positive attribution energy inside the mask / total positive energy (energy-based "
        "pointing game), and IoU of the region where the min-max scaled map exceeds 0.5 with "
        "the mask; higher = more focused on the object. Parameter mask_share is the EPG of a "
        "uniform map (chance). mask_source: foreground (bright pixels as masks) is this "
        "project's extension.",
        "001",
    ),
    "explanation_shift": (
        "Cosine similarity between the explanation of an image and that of the image shifted "
        "diagonally by s pixels (shifted back, over the shared area), against s: 1 = the "
        "explanation moves with the image; periodic dips reveal the patch or stride grid "
        "(paper 001 Fig. 5). Our summaries: the model's mean cosine over s > 0, and "
        "curve_gap = mean |c_model(s) - c_teacher(s)| (lower = the teacher's shift behaviour "
        "was distilled).",
        "001",
    ),
    "cam_similarity": (
        "Grad-CAM similarity %: share of images on which the teacher's Grad-CAM (true class) is "
        "closer, by cosine, to the row model's than to the column's independent model "
        "(vs_<model>); 0.5 = chance, above = the distilled student looks where its teacher "
        "looks. Rows between two independent models are the sanity check and should be near "
        "0.5. Exact ties count 1/2 (ours).",
        "003",
    ),
    "adversarial": (
        "Accuracy on clean inputs and under FGSM and PGD (L-inf budget eps) and DeepFool "
        "(values <m>/deepfool, <m>/deepfool_strong: the smallest step across the linearised "
        "nearest boundary, 50 steps, overshoot 0.02) attacks; the strong variants attack the "
        "logits divided by the model's training temperature, undoing gradient masking. Paper 004 "
        "attacks CIFAR-10 and TSRD images; attacking 2-D toy points (the decision-map data) is "
        "this project's extension. Opt-in: I-FGSM (5 steps), PGD-L2 and Carlini-Wagner L2 "
        "(<m>/cw_l2_l2: mean L2 norm of its successes). Series, if any: accuracy against the "
        "attack budget eps.",
        "004",
    ),
    "group_gap": (
        "Top-1 accuracy per group of the held-out data, the worst group and the gap between the "
        "best and the worst (lower is better), and teacher-student agreement per group. With "
        "spurious backgrounds the groups are the majority (background agrees with the label: in "
        "distribution) and the minority (out of distribution), as paper 001 evaluates KD students "
        "on Waterbirds; paper 003 6.2 asks whether a teacher's group bias passes to its student.",
        "001",
    ),
    "adversarial_transfer": (
        "Images crafted by iterative FGSM (5 steps, L-inf eps) to change a source network's "
        "prediction; of those that succeed, the share that also change each other model's "
        "prediction (<source>-><model>). Paper 003 finds the distilled student fooled more often "
        "than the independent one by its teacher's images, but not by a foreign network's (the "
        "control, if a foreign model is named). <source>/success: the attack's success rate on "
        "the source itself. Student -> teacher rows (reverse) are this project's addition.",
        "003",
    ),
    "domain_consensus": (
        "Accuracy of each model and teacher-student top-1 consensus (share of images on which "
        "their predictions match, right or wrong) on the held-out images redrawn in unseen "
        "domains: colour and natural-photo backgrounds, edge maps, silhouettes, sketches, "
        "stylised (texture-swapped) objects; original = the seen domain. Paper 003 finds "
        "distillation raises consensus on unseen domains more than on the seen one. Our "
        "domains are CPU-scale redrawings (the paper uses Geirhos et al.'s ImageNet sets); the "
        "main value (mean over the shifted domains) is ours.",
        "003",
    ),
    "shape_bias": (
        "Shape bias on cue-conflict images (each object's shape filled with the texture tied to "
        "another class): shape decisions / (shape + texture decisions); shape and texture: the "
        "shares of images decided by each cue. Paper 003 finds a shape-biased teacher raises "
        "its student's shape bias. Ours: masked texture fills instead of style transfer, "
        "class textures that only models trained on them (textured-fashion) know, and "
        "diff = student's shape bias minus its teacher's.",
        "003",
    ),
    "invariance": (
        "Share of held-out images on which a model gives the same top-1 class to two views of "
        "the image: colour (the image vs a colour-jittered copy: brightness, contrast, "
        "saturation 1 +/- U[0, s], hue +/- U[0, s/2]; grey images colourised first with random "
        "foreground and background colours, ours), crop (two random crops of a share of the "
        "area, resized back) and shift (two copies shifted by up to m pixels from each other), "
        "each against its strength. Paper 003 finds a student distilled from a teacher trained "
        "with the augmentation more invariant than the independent student, but not one "
        "distilled from a teacher T* trained without it. Our summaries: the mean agreement over "
        "each sweep, and <family>_gap = mean |inv_model(s) - inv_teacher(s)| (lower = closer "
        "to the teacher's invariance).",
        "003",
    ),
    "decision_map": (
        "Predicted class probabilities over a 2-D input grid, as in paper 004's decision "
        "heatmaps. The two numbers are this project's measures, not the paper's (it describes "
        "the blurry 'twilight zone' only in words): hardness = mean of p(1) - p(2), the top-2 "
        "probability margin, over grid points that have a 4-neighbour with another predicted "
        "class (near 1 = step-like boundary, near 0 = sigmoid-like); twilight = share of grid "
        "points whose top probability max_k p_k is below 0.9.",
        "004",
    ),
}

GENERIC = "No description registered for this probe; its values are shown as recorded."


def describe(probe: str) -> str:
    """The description line of a probe, with its paper when it has one.

    Example:
        >>> describe("agreement").endswith("[001] " + PAPERS["001"] + ".")
        True
        >>> describe("mystery") == GENERIC
        True
        >>> describe("cam_similarity").endswith("Knowledge Distillation?")  # no "?."
        True
    """
    if probe not in PROBE_DESCRIPTIONS:
        return GENERIC
    text, paper = PROBE_DESCRIPTIONS[probe]
    if paper is None:
        return text
    title = PAPERS[paper]
    return f"{text} Source: [{paper}] {title}{'' if title[-1] in '.?!' else '.'}"
