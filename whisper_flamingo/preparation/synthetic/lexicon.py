# ruff: noqa: E501 - one table row per line reads better than wrapped rows
"""The closed vocabulary of the synthetic corpus, with aligned French and Spanish entries.

Each table is a block of lines, one entry per line, fields separated by ``;`` and forms within a
field by ``|``.  :mod:`.grammar` parses them once into small dataclasses.  English is written the
way LRS3 labels are (lower case, apostrophes only); translations keep accents and casing.
"""

from __future__ import annotations

# noun: en sg|pl (no pl = mass noun) ; fr sg|pl|gender ; es sg|pl|gender ; kinds
# kinds: person animal thing fixed vehicle container text writable food drink
NOUNS = """
man|men ; homme|hommes|m ; hombre|hombres|m ; person
woman|women ; femme|femmes|f ; mujer|mujeres|f ; person
boy|boys ; garçon|garçons|m ; niño|niños|m ; person
girl|girls ; fille|filles|f ; niña|niñas|f ; person
child|children ; enfant|enfants|m ; chico|chicos|m ; person
teacher|teachers ; professeur|professeurs|m ; profesor|profesores|m ; person
doctor|doctors ; médecin|médecins|m ; médico|médicos|m ; person
farmer|farmers ; fermier|fermiers|m ; granjero|granjeros|m ; person
baker|bakers ; boulanger|boulangers|m ; panadero|panaderos|m ; person
student|students ; étudiant|étudiants|m ; estudiante|estudiantes|m ; person
neighbor|neighbors ; voisin|voisins|m ; vecino|vecinos|m ; person
friend|friends ; ami|amis|m ; amigo|amigos|m ; person
brother|brothers ; frère|frères|m ; hermano|hermanos|m ; person
sister|sisters ; sœur|sœurs|f ; hermana|hermanas|f ; person
mother|mothers ; mère|mères|f ; madre|madres|f ; person
father|fathers ; père|pères|m ; padre|padres|m ; person
grandmother|grandmothers ; grand-mère|grands-mères|f ; abuela|abuelas|f ; person
uncle|uncles ; oncle|oncles|m ; tío|tíos|m ; person
aunt|aunts ; tante|tantes|f ; tía|tías|f ; person
cook|cooks ; cuisinier|cuisiniers|m ; cocinero|cocineros|m ; person
driver|drivers ; chauffeur|chauffeurs|m ; conductor|conductores|m ; person
painter|painters ; peintre|peintres|m ; pintor|pintores|m ; person
singer|singers ; chanteuse|chanteuses|f ; cantante|cantantes|f ; person
sailor|sailors ; marin|marins|m ; marinero|marineros|m ; person
king|kings ; roi|rois|m ; rey|reyes|m ; person
queen|queens ; reine|reines|f ; reina|reinas|f ; person
nurse|nurses ; infirmière|infirmières|f ; enfermera|enfermeras|f ; person
soldier|soldiers ; soldat|soldats|m ; soldado|soldados|m ; person
dog|dogs ; chien|chiens|m ; perro|perros|m ; animal
cat|cats ; chat|chats|m ; gato|gatos|m ; animal
bird|birds ; oiseau|oiseaux|m ; pájaro|pájaros|m ; animal
horse|horses ; cheval|chevaux|m ; caballo|caballos|m ; animal
cow|cows ; vache|vaches|f ; vaca|vacas|f ; animal
duck|ducks ; canard|canards|m ; pato|patos|m ; animal
mouse|mice ; souris|souris|f ; ratón|ratones|m ; animal
fox|foxes ; renard|renards|m ; zorro|zorros|m ; animal
book|books ; livre|livres|m ; libro|libros|m ; thing text writable container
letter|letters ; lettre|lettres|f ; carta|cartas|f ; thing text writable
newspaper|newspapers ; journal|journaux|m ; periódico|periódicos|m ; thing text
map|maps ; carte|cartes|f ; mapa|mapas|m ; thing text
box|boxes ; boîte|boîtes|f ; caja|cajas|f ; thing container
bag|bags ; sac|sacs|m ; bolso|bolsos|m ; thing container
basket|baskets ; panier|paniers|m ; cesta|cestas|f ; thing container
bottle|bottles ; bouteille|bouteilles|f ; botella|botellas|f ; thing container
cup|cups ; tasse|tasses|f ; taza|tazas|f ; thing container
plate|plates ; assiette|assiettes|f ; plato|platos|m ; thing
door|doors ; porte|portes|f ; puerta|puertas|f ; fixed container
window|windows ; fenêtre|fenêtres|f ; ventana|ventanas|f ; fixed container
wall|walls ; mur|murs|m ; pared|paredes|f ; fixed
fence|fences ; clôture|clôtures|f ; valla|vallas|f ; fixed
chair|chairs ; chaise|chaises|f ; silla|sillas|f ; thing
table|tables ; table|tables|f ; mesa|mesas|f ; thing
lamp|lamps ; lampe|lampes|f ; lámpara|lámparas|f ; thing
clock|clocks ; horloge|horloges|f ; reloj|relojes|m ; thing
key|keys ; clé|clés|f ; llave|llaves|f ; thing
hat|hats ; chapeau|chapeaux|m ; sombrero|sombreros|m ; thing
coat|coats ; manteau|manteaux|m ; abrigo|abrigos|m ; thing
shoe|shoes ; chaussure|chaussures|f ; zapato|zapatos|m ; thing
umbrella|umbrellas ; parapluie|parapluies|m ; paraguas|paraguas|m ; thing container
bicycle|bicycles ; vélo|vélos|m ; bicicleta|bicicletas|f ; thing vehicle
boat|boats ; bateau|bateaux|m ; barco|barcos|m ; thing vehicle
car|cars ; voiture|voitures|f ; coche|coches|m ; vehicle
truck|trucks ; camion|camions|m ; camión|camiones|m ; vehicle
ball|balls ; ballon|ballons|m ; pelota|pelotas|f ; thing
picture|pictures ; tableau|tableaux|m ; cuadro|cuadros|m ; thing
mirror|mirrors ; miroir|miroirs|m ; espejo|espejos|m ; thing
phone|phones ; téléphone|téléphones|m ; teléfono|teléfonos|m ; thing
pencil|pencils ; crayon|crayons|m ; lápiz|lápices|m ; thing
blanket|blankets ; couverture|couvertures|f ; manta|mantas|f ; thing
candle|candles ; bougie|bougies|f ; vela|velas|f ; thing
guitar|guitars ; guitare|guitares|f ; guitarra|guitarras|f ; thing
ticket|tickets ; billet|billets|m ; billete|billetes|m ; thing
apple|apples ; pomme|pommes|f ; manzana|manzanas|f ; food
orange|oranges ; orange|oranges|f ; naranja|naranjas|f ; food
cake|cakes ; gâteau|gâteaux|m ; pastel|pasteles|m ; food
sandwich|sandwiches ; sandwich|sandwichs|m ; bocadillo|bocadillos|m ; food
egg|eggs ; œuf|œufs|m ; huevo|huevos|m ; food
tomato|tomatoes ; tomate|tomates|f ; tomate|tomates|m ; food
carrot|carrots ; carotte|carottes|f ; zanahoria|zanahorias|f ; food
banana|bananas ; banane|bananes|f ; plátano|plátanos|m ; food
potato|potatoes ; pomme de terre|pommes de terre|f ; patata|patatas|f ; food
bread ; pain|m ; pan|m ; food
soup ; soupe|f ; sopa|f ; food
cheese ; fromage|m ; queso|m ; food
rice ; riz|m ; arroz|m ; food
chicken ; poulet|m ; pollo|m ; food
coffee ; café|m ; café|m ; drink
tea ; thé|m ; té|m ; drink
milk ; lait|m ; leche|f ; drink
juice ; jus|m ; zumo|m ; drink
wine ; vin|m ; vino|m ; drink
lemonade ; limonade|f ; limonada|f ; drink
"""

# adjective: en ; fr m|f[|mpl|fpl] ; es m|f[|mpl|fpl] ; kinds ; flags
# flags: pre (French prenominal), alt=X (French masc. sg. before a vowel), estar (Spanish copula)
ADJECTIVES = """
red ; rouge|rouge ; rojo|roja ; thing vehicle fixed container text ;
blue ; bleu|bleue ; azul|azul ; thing vehicle fixed container text ;
green ; vert|verte ; verde|verde ; thing vehicle fixed container text food ;
yellow ; jaune|jaune ; amarillo|amarilla ; thing vehicle fixed container text food ;
black ; noir|noire ; negro|negra ; thing vehicle container animal ;
white ; blanc|blanche ; blanco|blanca ; thing vehicle fixed container animal ;
grey ; gris|grise ; gris|gris ; thing vehicle container animal ;
big ; grand|grande ; grande|grande ; thing vehicle container animal ; pre
small ; petit|petite ; pequeño|pequeña ; thing vehicle container animal person ; pre
old ; vieux|vieille|vieux|vieilles ; viejo|vieja ; thing vehicle fixed animal person ; pre alt=vieil
new ; nouveau|nouvelle|nouveaux|nouvelles ; nuevo|nueva ; thing vehicle container text ; pre alt=nouvel
young ; jeune|jeune ; joven|joven|jóvenes|jóvenes ; animal person ; pre
beautiful ; beau|belle|beaux|belles ; hermoso|hermosa ; thing vehicle animal person ; pre alt=bel
heavy ; lourd|lourde ; pesado|pesada ; thing container ;
broken ; cassé|cassée ; roto|rota ; thing vehicle fixed container ; estar
clean ; propre|propre ; limpio|limpia ; thing vehicle fixed container ; estar
dirty ; sale|sale ; sucio|sucia ; thing vehicle fixed container animal ; estar
empty ; vide|vide ; vacío|vacía ; container ; estar
full ; plein|pleine ; lleno|llena ; container ; estar
expensive ; cher|chère ; caro|cara ; thing vehicle food drink ;
round ; rond|ronde ; redondo|redonda ; thing food ;
wooden ; en bois|en bois|en bois|en bois ; de madera|de madera|de madera|de madera ; thing fixed ;
hot ; chaud|chaude ; caliente|caliente ; food drink ; estar
cold ; froid|froide ; frío|fría ; food drink ; estar
fresh ; frais|fraîche|frais|fraîches ; fresco|fresca ; food drink ;
sweet ; sucré|sucrée ; dulce|dulce ; food drink ;
tired ; fatigué|fatiguée ; cansado|cansada ; person animal ; estar
happy ; heureux|heureuse|heureux|heureuses ; contento|contenta ; person animal ; estar
sad ; triste|triste ; triste|triste ; person animal ; estar
busy ; occupé|occupée ; ocupado|ocupada ; person ; estar
angry ; fâché|fâchée ; enfadado|enfadada ; person animal ; estar
kind ; gentil|gentille ; amable|amable ; person ;
tall ; grand|grande ; alto|alta ; person ;
strong ; fort|forte ; fuerte|fuerte ; person animal ;
funny ; drôle|drôle ; gracioso|graciosa ; person animal ;
lazy ; paresseux|paresseuse|paresseux|paresseuses ; perezoso|perezosa ; person animal ;
brave ; courageux|courageuse|courageux|courageuses ; valiente|valiente ; person ;
famous ; célèbre|célèbre ; famoso|famosa ; person ;
quiet ; calme|calme ; tranquilo|tranquila ; person animal ;
"""

# verb: en base|3s|past ; fr inf|1s|3s|1p|3p|pp ; es inf|1s|3s|1p|3p|pp[|pret1s|pret3s|pret1p|pret3p]
#       ; object kinds (transitive) or '-' ; subject kinds of the intransitive use or '-'
VERBS = """
paint|paints|painted ; peindre|peins|peint|peignons|peignent|peint ; pintar|pinto|pinta|pintamos|pintan|pintado ; thing fixed vehicle ; person
buy|buys|bought ; acheter|achète|achète|achetons|achètent|acheté ; comprar|compro|compra|compramos|compran|comprado ; thing food drink vehicle container ; -
sell|sells|sold ; vendre|vends|vend|vendons|vendent|vendu ; vender|vendo|vende|vendemos|venden|vendido ; thing food vehicle ; -
clean|cleans|cleaned ; nettoyer|nettoie|nettoie|nettoyons|nettoient|nettoyé ; limpiar|limpio|limpia|limpiamos|limpian|limpiado ; thing fixed vehicle container ; -
open|opens|opened ; ouvrir|ouvre|ouvre|ouvrons|ouvrent|ouvert ; abrir|abro|abre|abrimos|abren|abierto ; container ; -
close|closes|closed ; fermer|ferme|ferme|fermons|ferment|fermé ; cerrar|cierro|cierra|cerramos|cierran|cerrado ; container ; -
carry|carries|carried ; porter|porte|porte|portons|portent|porté ; llevar|llevo|lleva|llevamos|llevan|llevado ; thing container ; -
find|finds|found ; trouver|trouve|trouve|trouvons|trouvent|trouvé ; encontrar|encuentro|encuentra|encontramos|encuentran|encontrado ; thing container text ; -
lose|loses|lost ; perdre|perds|perd|perdons|perdent|perdu ; perder|pierdo|pierde|perdemos|pierden|perdido ; thing ; -
watch|watches|watched ; regarder|regarde|regarde|regardons|regardent|regardé ; mirar|miro|mira|miramos|miran|mirado ; thing fixed vehicle ; -
read|reads|read ; lire|lis|lit|lisons|lisent|lu ; leer|leo|lee|leemos|leen|leído|leí|leyó|leímos|leyeron ; text ; person
write|writes|wrote ; écrire|écris|écrit|écrivons|écrivent|écrit ; escribir|escribo|escribe|escribimos|escriben|escrito ; writable ; person
cook|cooks|cooked ; préparer|prépare|prépare|préparons|préparent|préparé ; cocinar|cocino|cocina|cocinamos|cocinan|cocinado ; food ; -
eat|eats|ate ; manger|mange|mange|mangeons|mangent|mangé ; comer|como|come|comemos|comen|comido ; food ; person animal
drink|drinks|drank ; boire|bois|boit|buvons|boivent|bu ; beber|bebo|bebe|bebemos|beben|bebido ; drink ; -
wash|washes|washed ; laver|lave|lave|lavons|lavent|lavé ; lavar|lavo|lava|lavamos|lavan|lavado ; thing fixed vehicle container ; -
fix|fixes|fixed ; réparer|répare|répare|réparons|réparent|réparé ; arreglar|arreglo|arregla|arreglamos|arreglan|arreglado ; thing fixed vehicle ; -
draw|draws|drew ; dessiner|dessine|dessine|dessinons|dessinent|dessiné ; dibujar|dibujo|dibuja|dibujamos|dibujan|dibujado ; thing fixed vehicle text ; person
bring|brings|brought ; apporter|apporte|apporte|apportons|apportent|apporté ; traer|traigo|trae|traemos|traen|traído|traje|trajo|trajimos|trajeron ; thing food drink container ; -
hide|hides|hid ; cacher|cache|cache|cachons|cachent|caché ; esconder|escondo|esconde|escondemos|esconden|escondido ; thing container text ; -
throw|throws|threw ; lancer|lance|lance|lançons|lancent|lancé ; lanzar|lanzo|lanza|lanzamos|lanzan|lanzado ; thing ; -
hold|holds|held ; tenir|tiens|tient|tenons|tiennent|tenu ; sostener|sostengo|sostiene|sostenemos|sostienen|sostenido|sostuve|sostuvo|sostuvimos|sostuvieron ; thing container ; -
push|pushes|pushed ; pousser|pousse|pousse|poussons|poussent|poussé ; empujar|empujo|empuja|empujamos|empujan|empujado ; thing vehicle fixed ; -
move|moves|moved ; déplacer|déplace|déplace|déplaçons|déplacent|déplacé ; mover|muevo|mueve|movemos|mueven|movido ; thing vehicle container ; -
see|sees|saw ; voir|vois|voit|voyons|voient|vu ; ver|veo|ve|vemos|ven|visto|vi|vio|vimos|vieron ; thing fixed vehicle container ; -
choose|chooses|chose ; choisir|choisis|choisit|choisissons|choisissent|choisi ; elegir|elijo|elige|elegimos|eligen|elegido|elegí|eligió|elegimos|eligieron ; thing food drink vehicle ; -
keep|keeps|kept ; garder|garde|garde|gardons|gardent|gardé ; guardar|guardo|guarda|guardamos|guardan|guardado ; thing container text ; -
fill|fills|filled ; remplir|remplis|remplit|remplissons|remplissent|rempli ; llenar|lleno|llena|llenamos|llenan|llenado ; container ; -
break|breaks|broke ; casser|casse|casse|cassons|cassent|cassé ; romper|rompo|rompe|rompemos|rompen|roto ; thing fixed container ; -
drive|drives|drove ; conduire|conduis|conduit|conduisons|conduisent|conduit ; conducir|conduzco|conduce|conducimos|conducen|conducido|conduje|condujo|condujimos|condujeron ; vehicle ; -
forget|forgets|forgot ; oublier|oublie|oublie|oublions|oublient|oublié ; olvidar|olvido|olvida|olvidamos|olvidan|olvidado ; thing container text ; -
count|counts|counted ; compter|compte|compte|comptons|comptent|compté ; contar|cuento|cuenta|contamos|cuentan|contado ; thing food ; -
touch|touches|touched ; toucher|touche|touche|touchons|touchent|touché ; tocar|toco|toca|tocamos|tocan|tocado ; thing fixed vehicle container ; -
take|takes|took ; prendre|prends|prend|prenons|prennent|pris ; tomar|tomo|toma|tomamos|toman|tomado ; thing food drink container ; -
play|plays|played ; jouer|joue|joue|jouons|jouent|joué ; jugar|juego|juega|jugamos|juegan|jugado ; - ; person animal
sleep|sleeps|slept ; dormir|dors|dort|dormons|dorment|dormi ; dormir|duermo|duerme|dormimos|duermen|dormido|dormí|durmió|dormimos|durmieron ; - ; person animal
work|works|worked ; travailler|travaille|travaille|travaillons|travaillent|travaillé ; trabajar|trabajo|trabaja|trabajamos|trabajan|trabajado ; - ; person
sing|sings|sang ; chanter|chante|chante|chantons|chantent|chanté ; cantar|canto|canta|cantamos|cantan|cantado ; - ; person animal
dance|dances|danced ; danser|danse|danse|dansons|dansent|dansé ; bailar|bailo|baila|bailamos|bailan|bailado ; - ; person
swim|swims|swam ; nager|nage|nage|nageons|nagent|nagé ; nadar|nado|nada|nadamos|nadan|nadado ; - ; person animal
run|runs|ran ; courir|cours|court|courons|courent|couru ; correr|corro|corre|corremos|corren|corrido ; - ; person animal
walk|walks|walked ; marcher|marche|marche|marchons|marchent|marché ; caminar|camino|camina|caminamos|caminan|caminado ; - ; person animal
laugh|laughs|laughed ; rire|ris|rit|rions|rient|ri ; reír|río|ríe|reímos|ríen|reído|reí|rio|reímos|rieron ; - ; person
cry|cries|cried ; pleurer|pleure|pleure|pleurons|pleurent|pleuré ; llorar|lloro|llora|lloramos|lloran|llorado ; - ; person
wait|waits|waited ; attendre|attends|attend|attendons|attendent|attendu ; esperar|espero|espera|esperamos|esperan|esperado ; - ; person animal
study|studies|studied ; étudier|étudie|étudie|étudions|étudient|étudié ; estudiar|estudio|estudia|estudiamos|estudian|estudiado ; - ; person
talk|talks|talked ; parler|parle|parle|parlons|parlent|parlé ; hablar|hablo|habla|hablamos|hablan|hablado ; - ; person
smile|smiles|smiled ; sourire|souris|sourit|sourions|sourient|souri ; sonreír|sonrío|sonríe|sonreímos|sonríen|sonreído|sonreí|sonrió|sonreímos|sonrieron ; - ; person
jump|jumps|jumped ; sauter|saute|saute|sautons|sautent|sauté ; saltar|salto|salta|saltamos|saltan|saltado ; - ; person animal
shout|shouts|shouted ; crier|crie|crie|crions|crient|crié ; gritar|grito|grita|gritamos|gritan|gritado ; - ; person
travel|travels|traveled ; voyager|voyage|voyage|voyageons|voyagent|voyagé ; viajar|viajo|viaja|viajamos|viajan|viajado ; - ; person
listen|listens|listened ; écouter|écoute|écoute|écoutons|écoutent|écouté ; escuchar|escucho|escucha|escuchamos|escuchan|escuchado ; - ; person animal
"""

# adverbs: en ; fr ; es ; flags (inner: French places it between auxiliary and participle;
# trans: also used after a direct object; plural: only with plural subjects)
ADVERBS = """
quietly ; doucement ; en silencio ; trans
slowly ; lentement ; despacio ; trans
quickly ; vite ; rápido ; trans
loudly ; fort ; en voz alta ;
carefully ; avec soin ; con cuidado ; trans
happily ; joyeusement ; alegremente ;
again ; encore ; otra vez ; trans inner
well ; bien ; bien ; inner
a lot ; beaucoup ; mucho ; inner
together ; ensemble ; juntos ; trans plural
"""

# places: en ; fr ; es ; kind (scene: where people act; spot: where things lie)
PLACES = """
in the garden ; dans le jardin ; en el jardín ; scene
in the kitchen ; dans la cuisine ; en la cocina ; scene
near the river ; près de la rivière ; cerca del río ; scene
at the market ; au marché ; en el mercado ; scene
at the station ; à la gare ; en la estación ; scene
on the beach ; sur la plage ; en la playa ; scene
in the park ; dans le parc ; en el parque ; scene
at school ; à l'école ; en la escuela ; scene
at home ; à la maison ; en casa ; scene
at the office ; au bureau ; en la oficina ; scene
behind the house ; derrière la maison ; detrás de la casa ; scene
under the bridge ; sous le pont ; debajo del puente ; scene
in the village ; au village ; en el pueblo ; scene
in the city ; en ville ; en la ciudad ; scene
by the lake ; au bord du lac ; junto al lago ; scene
in the forest ; dans la forêt ; en el bosque ; scene
at the library ; à la bibliothèque ; en la biblioteca ; scene
at the hospital ; à l'hôpital ; en el hospital ; scene
in the street ; dans la rue ; en la calle ; scene
on the hill ; sur la colline ; en la colina ; scene
at the bakery ; à la boulangerie ; en la panadería ; scene
at the hotel ; à l'hôtel ; en el hotel ; scene
near the church ; près de l'église ; cerca de la iglesia ; scene
on the farm ; à la ferme ; en la granja ; scene
in the classroom ; dans la salle de classe ; en el aula ; scene
on the train ; dans le train ; en el tren ; scene
at the airport ; à l'aéroport ; en el aeropuerto ; scene
in the mountains ; à la montagne ; en las montañas ; scene
at the museum ; au musée ; en el museo ; scene
in the square ; sur la place ; en la plaza ; scene
at the port ; au port ; en el puerto ; scene
on the table ; sur la table ; sobre la mesa ; spot
under the bed ; sous le lit ; debajo de la cama ; spot
in the box ; dans la boîte ; en la caja ; spot
next to the door ; à côté de la porte ; al lado de la puerta ; spot
in the car ; dans la voiture ; en el coche ; spot scene
on the shelf ; sur l'étagère ; en la estantería ; spot
in the fridge ; dans le frigo ; en la nevera ; spot
behind the sofa ; derrière le canapé ; detrás del sofá ; spot
in the drawer ; dans le tiroir ; en el cajón ; spot
on the floor ; par terre ; en el suelo ; spot
near the window ; près de la fenêtre ; cerca de la ventana ; spot scene
"""

# time phrases: en ; fr ; es ; tenses they go with
TIMES = """
yesterday ; hier ; ayer ; past
last night ; hier soir ; anoche ; past
last week ; la semaine dernière ; la semana pasada ; past
two days ago ; il y a deux jours ; hace dos días ; past
last summer ; l'été dernier ; el verano pasado ; past
yesterday afternoon ; hier après-midi ; ayer por la tarde ; past
an hour ago ; il y a une heure ; hace una hora ; past
this morning ; ce matin ; esta mañana ; past fut
on monday ; lundi ; el lunes ; past fut
on friday ; vendredi ; el viernes ; past fut
today ; aujourd'hui ; hoy ; past pres fut
every day ; tous les jours ; todos los días ; pres
every morning ; chaque matin ; cada mañana ; pres
every evening ; chaque soir ; cada tarde ; pres
on sundays ; le dimanche ; los domingos ; pres
at night ; la nuit ; por la noche ; pres
in the summer ; en été ; en verano ; pres
often ; souvent ; a menudo ; pres
sometimes ; parfois ; a veces ; pres
after school ; après l'école ; después de la escuela ; past pres fut
before dinner ; avant le dîner ; antes de la cena ; past pres fut
after lunch ; après le déjeuner ; después del almuerzo ; past pres fut
at noon ; à midi ; al mediodía ; past pres fut
tomorrow ; demain ; mañana ; fut
next week ; la semaine prochaine ; la próxima semana ; fut
tomorrow morning ; demain matin ; mañana por la mañana ; fut
soon ; bientôt ; pronto ; fut
next year ; l'année prochaine ; el año que viene ; fut
tonight ; ce soir ; esta noche ; pres fut
"""
